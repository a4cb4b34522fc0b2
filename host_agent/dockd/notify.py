"""systemd's notify protocol (sd_notify(3)), without libsystemd: datagrams to $NOTIFY_SOCKET.

`Type=notify` units learn that the daemon is ready (READY=1), what it is doing (STATUS=…),
that it is alive (WATCHDOG=1, at least every WatchdogSec; $WATCHDOG_USEC says how often) and
that it is stopping (STOPPING=1). Outside systemd (no $NOTIFY_SOCKET) every call does nothing.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):  # the abstract namespace
            address = "\0" + address[1:]
        self.address = address
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        # ping at half the interval systemd waits, as sd_watchdog_enabled(3) advises
        self.watchdog_s = int(usec) / 2e6 if usec.isdigit() and mine and int(usec) > 0 else 0.0
        self._sock: socket.socket | None = None

    def send(self, *fields: str) -> bool:
        """Send "KEY=value" fields in one datagram; False if there is nobody to tell."""
        if not self.address:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)  # a slow listener never stalls the service
            self._sock.sendto("\n".join(fields).encode(), self.address)
        except OSError:  # nobody listening, or its queue full: the note is dropped
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
