"""A many-slot dock (host_agent/dock/many.py): several simulated recorders docked at once into
one vault."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from host_agent.dock.many import dock_many
from host_agent.lab.simulator import SimConfig, SimulatedRecorder
from host_agent.vault import Vault
from tests.hil.conftest import FAST, device_records, lab

pytestmark = pytest.mark.simulator


def _start(tmp_path: Path, n: int) -> list[SimulatedRecorder]:
    recs = []
    for i in range(n):
        cfg = SimConfig(**{**FAST, "segments": 2,  # type: ignore[arg-type]
                           "device_id": f"SIM-MULTI-{i}",
                           "unit_key": lab(tmp_path)[0].public.hex()})
        recs.append(SimulatedRecorder(tmp_path / f"rec{i}", cfg, tmp_path / f"rec{i}.log").start())
    deadline = time.monotonic() + 30
    for rec in recs:
        while "ready for the dock" not in rec.log_text():
            assert rec.proc is not None and rec.proc.poll() is None, rec.log_text()
            assert time.monotonic() < deadline, rec.log_text()
            time.sleep(0.02)
    return recs


def test_four_recorders_docked_at_once_into_one_vault(tmp_path: Path) -> None:
    recs = _start(tmp_path, 4)
    ports = [r.port for r in recs]
    try:
        # Three worker processes for four ports: one worker serves two ports in threads.
        results = dock_many(ports, tmp_path / "vault", processes=3,
                            identity_dir=tmp_path / "pki" / "test-dock", enroll_unknown=True)
        left = [device_records(r) for r in recs]
    finally:
        for r in recs:
            r.stop()
    assert [r.port for r in results] == ports
    for res in results:
        assert res.ok, res.error
        assert res.report is not None
        off = res.report["offload"]
        # the segments, then the signed clock step
        assert off["stored"] == [1, 2, 3] and off["released"] == [1, 2, 3]
        assert not off["quarantined"]
        assert 0 < off["started"] <= off["finished"]
    assert left == [[], [], [], []]  # each device freed only what the vault holds
    with Vault.open(tmp_path / "vault", create=False) as vault:
        assert vault.verify() == []
        for i, res in enumerate(results):
            assert res.report is not None and res.report["device_id"] == f"SIM-MULTI-{i}"
            assert [r["seq"] for r in vault.records(f"SIM-MULTI-{i}")] == [1, 2, 3]
            assert len(vault.dockings(f"SIM-MULTI-{i}")) == 1


def test_a_dead_port_fails_alone(tmp_path: Path) -> None:
    recs = _start(tmp_path, 2)
    try:
        ports = [recs[0].port, str(tmp_path / "no-such-tty"), recs[1].port]
        results = dock_many(ports, tmp_path / "vault", enroll_unknown=True,
                            identity_dir=tmp_path / "pki" / "test-dock")
    finally:
        for r in recs:
            r.stop()
    assert [r.ok for r in results] == [True, False, True]
    assert "no-such-tty" in results[1].error and results[1].report is None
    assert results[1].bytes == 0 and results[0].bytes > 0


def test_a_port_listed_twice_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        dock_many(["/dev/null", "/dev/null"], tmp_path / "vault",
                  identity_dir=tmp_path / "pki" / "test-dock")
