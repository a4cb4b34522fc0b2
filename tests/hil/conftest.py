"""Hardware-in-the-loop fixtures: the recorder firmware in real MicroPython on a pty pair.

By default every test docks a simulated recorder: the mpy-cross firmware in the MicroPython
unix port under a heap ceiling (HEAPSIZE), on a null modem that can also be a bad cable
(`up=`/`down=` take a host_agent.lab.nullmodem.Impairment). With `--device-port /dev/ttyACM0`
the same tests dock a real board instead; a test that needs the simulator (to choose what the
device records, read its storage, damage the line or kill it) is skipped with the reason.
See tests/hil/README.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from host_agent.dock.session import DockSession
from host_agent.keys import DockIdentity, UnitKey
from host_agent.lab.nullmodem import Impairment
from host_agent.lab.simulator import SimConfig, SimulatedRecorder
from host_agent.lab.unit import lab_unit
from host_agent.transport.serial import SerialTransport
from host_agent.vault import Vault

# The heap of the target board class: a board with about 256 KB of heap for data, e.g. an
# ESP32-S3 (512 KB SRAM) without PSRAM. On the unix port the heap also holds the firmware's
# bytecode (~140 KB with MQTT, policy and phases), which a board keeps in flash, so the
# simulator gets that much more. 288k boots, but a long phase session fragments it until a
# 2 KB allocation fails; 384k leaves a margin. BODYCAM_HIL_HEAPSIZE overrides it.
HEAPSIZE = os.environ.get("BODYCAM_HIL_HEAPSIZE", "384k")
FAST = dict(segments=2, segment_ms=200, bitrate=8_000_000, heapsize=HEAPSIZE)

_board: dict[str, Any] = {"port": None, "baud": 921600}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "simulator: needs the simulated recorder (skipped with --device-port)")
    _board["port"] = config.getoption("--device-port", default=None)
    _board["baud"] = config.getoption("--device-baud", default=921600)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    port = _board["port"]
    if not port:
        return
    skip = pytest.mark.skip(
        reason=f"needs the simulated recorder (kills it, damages its line or reads its "
               f"storage); --device-port {port} docks a real board")
    for item in items:
        if item.get_closest_marker("simulator"):
            item.add_marker(skip)


def lab(tmp_path: Path) -> tuple[UnitKey, DockIdentity]:
    """The test's unit (recorders are commissioned to it) and a dock it certified."""
    return lab_unit(tmp_path / "pki", "test-dock")


def real_board() -> str | None:
    """The --device-port given, or None when the tests run on the simulator."""
    return _board["port"]


class BoardRecorder:
    """A real recorder on a serial port: what `docked` yields in place of a simulator."""

    def __init__(self, port: str) -> None:
        self.port = port

    def log_text(self) -> str:
        return ""  # a board's log goes to its own console, not to us

    def kill(self) -> None:
        pytest.skip("cutting a real board's power needs the simulator")

    def stop(self) -> None:
        pass


@contextmanager
def docked(
    tmp_path: Path, name: str = "rec", vault: Vault | None = None, enroll: bool = True,
    *, up: Impairment | None = None, down: Impairment | None = None, **config: object,
) -> Iterator[tuple[Any, DockSession]]:
    """A simulated recorder on a null modem, opened by a dock session through pyserial.

    `config` takes SimConfig fields; `up`/`down` impair the line device → host / host →
    device. The recorder is commissioned to the test's unit (`lab`) unless `unit_key` says
    otherwise, and the session docks with the dock that unit certified. With --device-port
    the recorder is the real board, and asking for any of those skips the test (a board
    records what it records).
    """
    own_vault = vault is None
    unit, identity = lab(tmp_path)
    port = real_board()
    if port:
        asked = sorted(config) + [k for k, v in (("up", up), ("down", down)) if v]
        if asked:
            pytest.skip(f"needs the simulator to set {', '.join(asked)}")
        v = vault or Vault.open(tmp_path / "vault")
        board = BoardRecorder(port)
        transport = SerialTransport(port, baudrate=_board["baud"])
        transport.open()
        try:
            yield board, DockSession(transport, v, identity, enroll_unknown=enroll)
        finally:
            transport.close()
            if own_vault:
                v.close()
        return
    cfg = SimConfig(**{**FAST, "unit_key": unit.public.hex(), **config})  # type: ignore[arg-type]
    v = vault or Vault.open(tmp_path / "vault")
    rec = SimulatedRecorder(tmp_path / name, cfg, tmp_path / f"{name}.log").start()
    if up or down:
        assert rec.modem is not None
        rec.modem.impair(up=up, down=down)
    transport = SerialTransport(rec.port)
    transport.open()
    try:
        yield rec, DockSession(transport, v, identity, enroll_unknown=enroll)
    except BaseException:
        print(rec.log_text())
        raise
    finally:
        transport.close()
        rec.stop()
        if own_vault:
            v.close()


@pytest.fixture
def recorder(tmp_path: Path) -> Callable[..., object]:
    return lambda **kw: docked(tmp_path, **kw)


def device_records(rec: SimulatedRecorder) -> list[str]:
    """Files left in the recorder's record store (data and signed records)."""
    if isinstance(rec, BoardRecorder):
        pytest.skip("reading the recorder's storage needs the simulator")
    return sorted(p.name for p in (rec.storage / "rec").iterdir())
