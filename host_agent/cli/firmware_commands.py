"""`bodycam device deploy` and `bodycam device commission`: the recorder firmware onto a board."""

from __future__ import annotations

import argparse


def register(dsub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the firmware's subcommands to `bodycam device`."""
