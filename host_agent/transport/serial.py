"""Serial transport over pyserial: frames on a byte stream (a UART, USB-CDC port or pty)."""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable
from typing import Any

import serial

from host_agent.transport import Disconnected
from protocol import framing

SerialFactory = Callable[..., Any]
_MAX_READ = 1 << 20
# A write the line does not take within this long (a recorder that died or stopped reading,
# its buffers full) is a lost link, not a dock hung forever.
WRITE_TIMEOUT_S = 10.0


class SerialTransport:
    """`url` is anything pyserial's serial_for_url takes: /dev/ttyACM0, a pty path, socket://…"""

    def __init__(
        self,
        url: str,
        baudrate: int = 921600,
        factory: SerialFactory = serial.serial_for_url,
        write_timeout: float = WRITE_TIMEOUT_S,
    ) -> None:
        self.name = f"serial:{url}"
        self.write_timeout = write_timeout
        self._url = url
        self._baudrate = baudrate
        self._factory = factory
        self._port: Any = None
        self.decoder = framing.FrameDecoder(max_payload=framing.DEFAULT_MAX_PAYLOAD)
        self.bytes_in = 0
        self.bytes_out = 0

    def open(self) -> None:
        try:
            port = self._factory(self._url, baudrate=self._baudrate, timeout=0,
                                 write_timeout=self.write_timeout, do_not_open=True)
            port.open()
            port.reset_input_buffer()
        except (serial.SerialException, OSError) as exc:
            raise Disconnected(f"cannot open {self._url}: {exc}") from exc
        self._port = port
        # A POSIX tty (a UART, USB-CDC port or pty) is read straight from its descriptor: one
        # read() per 4 KiB the line discipline hands over, instead of pyserial's select +
        # in_waiting + read for each. Other URLs (socket://, loop://) go through pyserial.
        fd = getattr(port, "fd", None)
        self._fd: int | None = fd if isinstance(fd, int) and fd >= 0 else None

    def close(self) -> None:
        self._fd = None
        if self._port is not None:
            self._port.close()
            self._port = None

    def send(self, payload: bytes) -> None:
        frame = framing.encode_frame(payload)
        try:
            self._port.write(frame)
        except serial.SerialTimeoutException:
            raise Disconnected(f"{self._url}: the line took nothing for"
                               f" {self.write_timeout:g} s (the recorder stopped reading)"
                               ) from None
        except (serial.SerialException, OSError) as exc:
            raise Disconnected(f"{self._url}: {exc}") from exc
        self.bytes_out += len(frame)

    def receive(self, timeout: float) -> bytes | None:
        """The next frame's payload, or None if none arrived within `timeout` seconds."""
        payload = self.decoder.next_frame()
        if payload is not None:
            return payload
        if self._fd is not None:
            return self._receive_fd(self._fd, timeout)
        return self._receive_port(timeout)

    def _receive_fd(self, fd: int, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        decoder = self.decoder
        waited = False
        while True:
            try:
                data = os.read(fd, _MAX_READ)  # the port is non-blocking (pyserial opens it so)
            except BlockingIOError:
                data = b""
            except OSError as exc:
                raise Disconnected(f"{self._url}: {exc}") from exc
            if data:
                waited = False
                self.bytes_in += len(data)
                decoder.receive_data(data)
                payload = decoder.next_frame()
                if payload is not None:
                    return payload
                continue
            if waited:
                # select() said readable, read() gave nothing: the device is gone (a closed
                # pty, an unplugged USB port), as pyserial itself concludes.
                raise Disconnected(f"{self._url}: readable but no data (disconnected?)")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                ready, _, _ = select.select([fd], [], [], remaining)
            except (OSError, ValueError) as exc:
                raise Disconnected(f"{self._url}: {exc}") from exc
            waited = bool(ready)

    def _receive_port(self, timeout: float) -> bytes | None:
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
