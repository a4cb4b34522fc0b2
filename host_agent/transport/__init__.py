"""The one interface the dock session needs from a link to a recorder.

A transport moves whole payloads (protocol/messages.py) both ways. Serial frames them on a
byte stream; MQTT carries one payload per message. Foreign exceptions (pyserial's, paho's)
are translated at the boundary into the errors below.
"""

from __future__ import annotations

from typing import Protocol


class TransportError(Exception):
    """The link failed; the session may reconnect and resume."""


class Disconnected(TransportError):
    """The link went away (cable pulled, port closed, broker gone)."""


class Transport(Protocol):
    name: str
    bytes_in: int  # bytes received so far, whole or damaged: a silent peer from a noisy line

    def open(self) -> None: ...

    def close(self) -> None: ...

    def send(self, payload: bytes) -> None:
        """Send one payload; raises Disconnected."""

    def receive(self, timeout: float) -> bytes | None:
        """Return the next payload, or None if none arrived within `timeout` seconds."""
