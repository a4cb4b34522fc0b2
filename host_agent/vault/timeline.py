"""Rebuild what happened on a recorder from its signed chain: phases, their events, gaps.

Input is the records as the vault holds them (already verified on ingest). Output is what a
supervisor or a court asks for (Art. 5–7, 11): for each mandated phase, when it started and
ended and how, whether the party was told it was being recorded, every refused attempt to
pause, stop or mute, the segments that cover it, and any gap with its cause.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from protocol import cose, manifest


class Records(Protocol):
    """Where records come from: a vault, or the central index (host_agent/custody/archive.py)."""

    def records(self, device_id: str) -> list[dict[str, Any]]: ...

    def record_bytes(self, device_id: str, seq: int) -> bytes: ...


@dataclass
class Phase:
    row: int
    case: str
    officer: str
    matter: str = ""
    stage: str = ""
    started_us: int = 0
    ended_us: int | None = None
    end_trigger: str = ""
    segments: list[int] = field(default_factory=list)
    recorded_us: int = 0
    refusals: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    gaps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def notice_given(self) -> bool:
        return any(e["event"] == "notice_given" for e in self.events)

    @property
    def findings(self) -> list[str]:
        """What a compliance review must look at (Art. 7, Art. 5, Art. 11)."""
        out = []
        if not self.notice_given:
            out.append("no notice to the party recorded (Art. 7)")
        if self.ended_us is None:
            out.append("phase not ended in the records offloaded so far")
        for g in self.gaps:
            out.append(f"recording broke: {g['cause']} (gap record {g['seq']})")
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["notice_given"] = self.notice_given
        d["findings"] = self.findings
        return d


def load_records(vault: Records, device_id: str) -> list[dict[str, Any]]:
    """The decoded payloads of a device's records in the vault, in chain order."""
    out = []
    for row in vault.records(device_id):
        seq = row["seq"]
        assert isinstance(seq, int)
        raw = vault.record_bytes(device_id, seq)
        out.append(manifest.decode(cose.parse_sign1(raw).payload))
    return out


def rebuild(records: list[dict[str, Any]]) -> list[Phase]:
    """Phases from a chain of records (in seq order)."""
    phases: list[Phase] = []
    by_key: dict[tuple[Any, Any], Phase] = {}

    def phase_of(fields: dict[str, Any]) -> Phase | None:
        # A segment is sealed when it ends, which may be after its phase's end event: match
        # by the phase it names, not by what is open in chain order.
        p = fields.get("phase") or {}
        return by_key.get((p.get("row"), p.get("case")))

    for f in records:
        kind = f["kind"]
        if kind == manifest.KIND_EVENT:
            name, detail = f["event"], f["detail"]
            if name == "phase_started":
                p = f["phase"]
                started = Phase(row=p["row"], case=p["case"], officer=p["officer"],
                                matter=detail.get("matter", ""), stage=detail.get("stage", ""),
                                started_us=f["t"])
                phases.append(started)
                by_key[(p["row"], p["case"])] = started
                continue
            target = phase_of(f)
            if target is None:
                continue
            entry = {"seq": f["seq"], "t": f["t"], "event": name, "detail": detail}
            target.events.append(entry)
            if name == "refused":
                target.refusals.append(entry)
            elif name == "phase_ended":
                target.ended_us = f["t"]
                target.end_trigger = detail.get("end", "")
        elif kind == manifest.KIND_SEGMENT:
            target = phase_of(f)
            if target is not None:
                target.segments.append(f["seq"])
                target.recorded_us += f["t_end"] - f["t_start"]
        elif kind == manifest.KIND_GAP:
            target = phase_of(f)
            if target is not None:
                target.gaps.append({"seq": f["seq"], "cause": f["cause"], "t_last": f["t_last"],
                                    "t_boot": f["t_boot"], "after_seq": f["last_seq"]})
    return phases


def device_timeline(vault: Records, device_id: str) -> list[Phase]:
    return rebuild(load_records(vault, device_id))
