"""The serial transport against a peer that misbehaves at the byte level."""

from __future__ import annotations

import os
import time
import tty

import pytest

from host_agent.transport import Disconnected
from host_agent.transport.serial import SerialTransport


def test_a_recorder_that_stops_reading_is_a_lost_link_not_a_hung_dock() -> None:
    """The dock writes to a pty whose other end never reads (a recorder that died with the
    line still up): the write gives up after the write timeout, as a lost link."""
    master, slave = os.openpty()
    tty.setraw(master)
    try:
        t = SerialTransport(os.ttyname(slave), write_timeout=0.5)
        t.open()
        start = time.monotonic()
        with pytest.raises(Disconnected, match="stopped reading"):
            for _ in range(10_000):  # far beyond any pty's buffer
                t.send(b"x" * 4096)
        assert time.monotonic() - start < 30  # it gave up; it did not hang
        t.close()
    finally:
        os.close(master)
        os.close(slave)
