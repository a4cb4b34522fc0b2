"""Argument types that turn bad input into a clear argparse error, never a traceback."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def int_in(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is not within {lo}..{hi}")
        return value

    return parse


def host_port(text: str) -> str:
    """A broker address, HOST:PORT, checked; returned as given (127.0.0.1 if HOST is empty)."""
    host, sep, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = 0
    if not sep or not 0 < number < 65536 or any(c.isspace() for c in host):
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:1883)")
    return f"{host or '127.0.0.1'}:{number}"
