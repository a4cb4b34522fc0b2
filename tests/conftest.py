"""Options for the whole suite (here, so `pytest --device-port …` works from the repo root)."""

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hil", "hardware in the loop")
    group.addoption("--device-port", default=None, metavar="PORT",
                    help="dock a real recorder on this serial port (e.g. /dev/ttyACM0) "
                         "instead of the simulated one; simulator-only tests are skipped")
    group.addoption("--device-baud", type=int, default=921600,
                    help="baud rate for --device-port (ignored by USB-CDC)")
