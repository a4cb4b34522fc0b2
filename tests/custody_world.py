"""A unit's vault with recorders that did things, for the custody tests (no mocks).

`World` holds a real vault, a lab unit and a dock it certified (host_agent/lab/unit.py), and
recorders played by `RecordChain` (real Ed25519 keys, real COSE records). Its methods record
what a recorder would sign (phases, notices, refusals, gaps, segments), ingest it through the
vault's one ingest step, release it with a dock-signed receipt as a docking does, and log
docking reports in the shape `host_agent.dock.session.DockReport` gives them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from host_agent.keys import DockIdentity, UnitKey
from host_agent.lab.unit import lab_unit
from host_agent.vault import Vault
from protocol import authority, manifest
from tests.factories import SEGMENT_US, T0_US, RecordChain

CASE = "GXSL-2026-0417"
OFFICER = "4501-0233"
SYNCED = {"state": "synced", "synced_at": T0_US - 60_000_000, "uncertainty_us": 2000}
UNSET = {"state": "unset", "synced_at": 0, "uncertainty_us": 0}


class World:
    def __init__(self, base: Path, dock_id: str = "test-dock", pki: Path | None = None) -> None:
        """A vault in base/vault; the unit and its dock in `pki` (default: base), so that
        several worlds can be docks of one unit."""
        self.base = base
        self.unit: UnitKey
        self.dock: DockIdentity
        self.unit, self.dock = lab_unit(pki or base, dock_id)
        self.vault = Vault.open(base / "vault")
        self.chains: dict[str, RecordChain] = {}
        self.clock: dict[str, dict[str, Any]] = {}

    def close(self) -> None:
        self.vault.close()

    def recorder(self, device_id: str, *, clock: dict[str, Any] | None = None) -> RecordChain:
        chain = RecordChain(device_id, seed=device_id.encode())
        self.vault.enroll(device_id, chain.public_key, by="test")
        self.chains[device_id] = chain
        self.clock[device_id] = clock or SYNCED
        return chain

    # -- what a recorder signs -----------------------------------------------------------------

    def _store(self, chain: RecordChain, fields: dict[str, Any], data: bytes | None) -> int:
        record = chain.sign(fields)
        chain.seq, chain.prev = fields["seq"], manifest.record_hash(record)
        outcome = self.vault.intake(chain.device_id).offer(fields["seq"], record, data)
        assert outcome.status == "stored" and not outcome.code, outcome
        return int(fields["seq"])

    def event(self, device_id: str, name: str, detail: dict[str, Any] | None = None,
              phase: dict[str, Any] | None = None, advance_us: int = 1_000_000) -> int:
        chain = self.chains[device_id]
        chain.t_us += advance_us
        fields = {"v": manifest.FORMAT_VERSION, "kind": manifest.KIND_EVENT,
                  "device_id": device_id, "seq": chain.seq + 1, "prev": chain.prev,
                  "policy": manifest.DEFAULT_POLICY, "fw": "0.1.0", "t": chain.t_us,
                  "clock": self.clock[device_id], "event": name, "detail": detail or {},
                  "phase": phase or {}}
        return self._store(chain, fields, None)

    def segment(self, device_id: str, phase: dict[str, Any] | None = None,
                data: bytes | None = None) -> int:
        chain = self.chains[device_id]
        data = data if data is not None else f"{device_id} segment {chain.seq + 1} ".encode() * 50
        fields = chain.segment_fields(data, phase=phase or {}, clock=self.clock[device_id])
        chain.t_us = fields["t_end"]
        return self._store(chain, fields, data)

    def gap(self, device_id: str, cause: str, phase: dict[str, Any] | None = None) -> int:
        chain = self.chains[device_id]
        t_last = chain.t_us
        chain.t_us += 30_000_000
        fields = {"v": manifest.FORMAT_VERSION, "kind": manifest.KIND_GAP,
                  "device_id": device_id, "seq": chain.seq + 1, "prev": chain.prev,
                  "policy": manifest.DEFAULT_POLICY, "fw": "0.1.0", "cause": cause,
                  "last_seq": chain.seq, "t_last": t_last, "t_boot": chain.t_us,
                  "clock": self.clock[device_id], "battery_main": {"pct": 50},
                  "battery_backup": {"pct": 50}, "phase": phase or {}}
        return self._store(chain, fields, None)

    def phase(self, device_id: str, *, row: int = 4, case: str = CASE, officer: str = OFFICER,
              notice: bool = True, segments: int = 2, refuse: str | None = None,
              gap: str | None = None, override: bool = False, end: bool = True) -> list[int]:
        """A mandated phase as the recorder signs it; the seqs of its records."""
        p = {"row": row, "case": case, "officer": officer}
        seqs = []
        if override:
            seqs.append(self.event(device_id, "low_battery_override", {"pct": 12, "floor": 20}))
        seqs.append(self.event(device_id, "phase_started", {
            "matter": "penalty", "stage": "on-site investigation",
            "start": "investigation starts", "end": "investigation ends"}, p))
        if notice:
            seqs.append(self.event(device_id, "notice_given", {"note": "recorded"}, p))
        for i in range(segments):
            seqs.append(self.segment(device_id, p))
            if i == 0 and refuse:
                seqs.append(self.event(device_id, "refused", {
                    "action": refuse, "reason": f"row {row} is recorded without interruption"},
                    p))
            if i == 0 and gap:
                seqs.append(self.gap(device_id, gap, p))
        if end:
            seqs.append(self.event(device_id, "phase_ended", {"end": "investigation ends"}, p))
        return seqs

    # -- what a docking does -------------------------------------------------------------------

    def release(self, device_id: str, seqs: list[int] | None = None) -> None:
        """The dock's signed receipts for these records (all the recorder's, by default)."""
        rows = self.vault.records(device_id)
        for row in rows:
            seq = int(str(row["seq"]))
            if seqs is not None and seq not in seqs:
                continue
            index = self.vault.log_index(f"records/{device_id}/{seq}")
            assert index is not None
            digest = row["record_sha256"]
            assert isinstance(digest, bytes)
            signed = authority.sign_statement(
                authority.receipt(device_id, seq, digest, authority.STATUS_STORED, index,
                                  self.dock.dock_id),
                authority.key_id(self.dock.public_key), self.dock.sign)
            self.vault.record_fact("receipt", {"device_id": device_id, "seq": seq,
                                               "statement": signed})

    def docking(self, device_id: str, *, offset_before_us: int = 1500, ready: bool = True,
                reasons: list[str] | None = None, status: dict[str, Any] | None = None) -> int:
        """A docking report as `bodycam dock` logs it (the parts the report reads)."""
        return self.vault.log_docking({
            "device_id": device_id, "firmware": "0.1.0", "key_fingerprint": "",
            "newly_enrolled": False,
            "clock": {"offset_before_us": offset_before_us, "bound_before_us": 120,
                      "offset_after_us": 3, "bound_after_us": 120,
                      "stepped_us": -offset_before_us, "samples": 32, "event": 0},
            "offload": {"stored": [], "released": [], "quarantined": []},
            "readiness": {"ready": ready, "reasons": reasons or [], "status": status or {
                "battery_main": {"pct": 96}, "battery_backup": {"pct": 88},
                "clock": {"state": "synced"}, "health": {
                    "faults": [], "foreign": [], "storage_full": False, "errors": 0}}},
            "vault": str(self.vault.root), "dock": self.dock.dock_id})

    def checkpoint(self) -> bytes:
        return self.vault.checkpoint(self.dock)


def docked_office(base: Path) -> Path:
    """A vault in base/vault with one recorder's phase of CASE, released and docked (the
    dock identity in base/test-dock, the unit in base/unit): what the CLI tests work on."""
    w = World(base)
    w.recorder("REC-1")
    w.phase("REC-1")
    w.release("REC-1")
    w.docking("REC-1")
    w.close()
    return base / "vault"


def segment_us() -> int:
    return SEGMENT_US
