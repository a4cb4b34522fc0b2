"""A null-modem cable in software: two ptys joined back to back.

The simulated recorder opens one end as its UART (`device_path`), the dock opens the other with
pyserial (`host_path`), exactly as it would open /dev/ttyACM0. Each pty keeps its own termios,
so the device's raw/VMIN=0 settings and pyserial's never fight. The relay is also where a test
rig can throttle or damage the line.
"""

from __future__ import annotations

import os
import select
import threading
import tty

_CHUNK = 1 << 16


class NullModem:
    def __init__(self) -> None:
        self._dev_master, self._dev_slave = os.openpty()
        self._host_master, self._host_slave = os.openpty()
        for fd in (self._dev_slave, self._host_slave):
            tty.setraw(fd)  # raw before anyone writes: no echo, no \n translation, no XON/XOFF
        for fd in (self._dev_master, self._host_master):
            os.set_blocking(fd, False)
        self.device_path = os.ttyname(self._dev_slave)
        self.host_path = os.ttyname(self._host_slave)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._pump, args=(self._dev_master, self._host_master),
                             name="nullmodem-up", daemon=True),
            threading.Thread(target=self._pump, args=(self._host_master, self._dev_master),
                             name="nullmodem-down", daemon=True),
        ]
        self.bytes_up = 0  # device -> host

    def start(self) -> NullModem:
        for t in self._threads:
            t.start()
        return self

    def _pump(self, src: int, dst: int) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([src], [], [], 0.2)
            if not ready:
                continue
            try:
                data = os.read(src, _CHUNK)
            except BlockingIOError:
                continue
            except OSError:
                return  # the pty is gone
            view = memoryview(data)
            while view and not self._stop.is_set():
                _, writable, _ = select.select([], [dst], [], 0.2)
                if not writable:
                    continue
                try:
                    n = os.write(dst, view)
                except BlockingIOError:
                    continue
                except OSError:
                    return
                view = view[n:]
            if src == self._dev_master:
                self.bytes_up += len(data)

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            if t.is_alive():
                t.join(timeout=2)
        for fd in (self._dev_master, self._dev_slave, self._host_master, self._host_slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> NullModem:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
