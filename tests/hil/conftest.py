"""Hardware-in-the-loop fixtures: the recorder firmware in real MicroPython on a pty pair."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from host_agent.serial_transport import SerialTransport
from host_agent.session import DockSession
from host_agent.simulator import SimConfig, SimulatedRecorder
from host_agent.vault import Vault

FAST = dict(segments=2, segment_ms=200, bitrate=8_000_000)


@contextmanager
def docked(
    tmp_path: Path, name: str = "rec", vault: Vault | None = None, enroll: bool = True,
    **config: object,
) -> Iterator[tuple[SimulatedRecorder, DockSession]]:
    """A simulated recorder on a null modem, opened by a dock session through pyserial."""
    cfg = SimConfig(**{**FAST, **config})  # type: ignore[arg-type]
    own_vault = vault is None
    v = vault or Vault.open(tmp_path / "vault")
    rec = SimulatedRecorder(tmp_path / name, cfg, tmp_path / f"{name}.log").start()
    transport = SerialTransport(rec.port)
    transport.open()
    try:
        yield rec, DockSession(transport, v, dock_id="test-dock", enroll_unknown=enroll)
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
    return sorted(p.name for p in (rec.storage / "rec").iterdir())
