"""Serial transport over pyserial: frames on a byte stream (a UART, USB-CDC port or pty)."""

from __future__ import annotations

import select
import time
from collections.abc import Callable
from typing import Any

import serial

from host_agent.transport import Disconnected
from protocol import framing

SerialFactory = Callable[..., Any]
_MAX_READ = 1 << 20


class SerialTransport:
    """`url` is anything pyserial's serial_for_url takes: /dev/ttyACM0, a pty path, socket://…"""

    def __init__(
        self,
        url: str,
        baudrate: int = 921600,
        factory: SerialFactory = serial.serial_for_url,
    ) -> None:
        self.name = f"serial:{url}"
        self._url = url
        self._baudrate = baudrate
        self._factory = factory
        self._port: Any = None
        self.decoder = framing.FrameDecoder(max_payload=framing.DEFAULT_MAX_PAYLOAD)
        self.bytes_in = 0
        self.bytes_out = 0

    def open(self) -> None:
        try:
            port = self._factory(self._url, baudrate=self._baudrate, timeout=0, do_not_open=True)
            port.open()
            port.reset_input_buffer()
        except (serial.SerialException, OSError) as exc:
            raise Disconnected(f"cannot open {self._url}: {exc}") from exc
        self._port = port

    def close(self) -> None:
        if self._port is not None:
            self._port.close()
            self._port = None

    def send(self, payload: bytes) -> None:
        frame = framing.encode_frame(payload)
        try:
            self._port.write(frame)
        except (serial.SerialException, OSError) as exc:
            raise Disconnected(f"{self._url}: {exc}") from exc
        self.bytes_out += len(frame)

    def receive(self, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        port = self._port
        while True:
            payload = self.decoder.next_frame()
            if payload is not None:
                return payload
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                waiting = port.in_waiting
                if not waiting:
                    # Wait for bytes without touching the port's timeout (pyserial re-applies
                    # termios whenever it changes); then take all that is there in one read.
                    select.select([port.fileno()], [], [], remaining)
                    waiting = port.in_waiting
                    if not waiting:
                        continue
                data = port.read(min(waiting, _MAX_READ))
            except (serial.SerialException, OSError) as exc:
                raise Disconnected(f"{self._url}: {exc}") from exc
            self.bytes_in += len(data)
            self.decoder.receive_data(data)
