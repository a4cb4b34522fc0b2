"""The compliance report (Art. 11, and Art. 4, 5, 7, 8 on which it rests).

Read from the vault alone: phases rebuilt from the signed records (host_agent/vault/timeline.py),
the docking reports, the recorders' custody. Every finding names its code, the recorder, the
officer and case where there is one, when, and the records that show it:

    gap_in_phase      a mandated phase broke (power loss, storage full, …): the gap record
    no_segment        a mandated phase with no segment at all
    refused           a refused pause, stop or mute during a mandated phase
    no_notice         a phase without the notice to the party (Art. 7)
    not_ended         a phase not ended in the records offloaded so far
    late_offload      records stored more than `late_offload_h` after they were recorded
    clock_never_set   records signed while the recorder's clock had never been set
    clock_drift       a docking found the clock off by more than the policy's bound
    battery_override  a phase started on a main battery below the policy's floor
    readiness_failed  a docking found the recorder not ready for duty (Art. 4)
    not_docked        a recorder not docked for `not_docked_days`
    foreign_files     a docking found files on the card that are not the recorder's
    storage_full      the card filled up (a storage_full gap, or the status at a docking)
    other_officer     a phase recorded by an officer the recorder was not issued to (Art. 8)

`build` returns a JSON-ready dict; host_agent/custody/report_html.py draws it for people.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from host_agent.custody import times
from host_agent.custody.recorders import Holding, Recorders
from host_agent.vault.timeline import device_timeline
from protocol import policy as unit_policy

if TYPE_CHECKING:
    from host_agent.custody.archive import Archive

CODES = ("gap_in_phase", "no_segment", "refused", "no_notice", "not_ended", "late_offload",
         "clock_never_set", "clock_drift", "battery_override", "readiness_failed", "not_docked",
         "foreign_files", "storage_full", "other_officer")
HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US


@dataclass
class Scope:
    """What the report covers: a period (µs, [start, end)), and optionally one recorder,
    officer or case; and the bounds it judges by."""

    start_us: int | None = None
    end_us: int | None = None
    device: str | None = None
    officer: str | None = None
    case: str | None = None
    as_of_us: int | None = None
    late_offload_h: int = 24
    not_docked_days: int = 7
    clock_bound_us: int = int(unit_policy.DEFAULT_THRESHOLDS["duty_clock_error_us"])

    def within(self, t_us: int | None) -> bool:
        if t_us is None:
            return self.start_us is None and self.end_us is None
        return ((self.start_us is None or t_us >= self.start_us)
                and (self.end_us is None or t_us < self.end_us))


def build(vault: Archive, scope: Scope) -> dict[str, Any]:
    return _Report(vault, scope).build()


class _Report:
    def __init__(self, vault: Archive, scope: Scope) -> None:
        self.vault = vault
        self.scope = scope
        self.recorders = Recorders(vault)
        self.findings: list[dict[str, Any]] = []
        self.holdings: dict[str, list[Holding]] = {}
        self.as_of = scope.as_of_us if scope.as_of_us is not None else times.now_us()

    def add(self, code: str, device: str, t_us: int | None, detail: str, *,
            officer: str | None = None, case: str | None = None,
            records: list[int] | None = None, row: int | None = None) -> None:
        if officer is None and t_us is not None:  # who held the recorder then
            officer = self.holder_at(device, t_us)
        if self.scope.officer is not None and officer != self.scope.officer:
            return
        if self.scope.case is not None and case != self.scope.case:
            return
        self.findings.append({"code": code, "device": device, "officer": officer,
                              "case": case, "row": row, "t": times.iso(t_us), "t_us": t_us,
                              "records": records or [], "detail": detail})

    def holder_at(self, device_id: str, t_us: int) -> str | None:
        if device_id not in self.holdings:
            self.holdings[device_id] = self.recorders.holdings(device_id)
        at = times.iso(t_us) or ""
        return next((h.officer for h in self.holdings[device_id] if h.issued_at <= at
                     and (h.returned_at is None or at < h.returned_at)), None)

    def devices(self) -> list[str]:
        ids = [str(d["device_id"]) for d in self.vault.devices()]
        return [d for d in ids if self.scope.device in (None, d)]

    def build(self) -> dict[str, Any]:
        phases: list[dict[str, Any]] = []
        drift: dict[str, list[dict[str, Any]]] = {}
        devices = []
        for device_id in self.devices():
            rows = self.vault.records(device_id)
            phases += self.phases(device_id, rows)
            self.records(device_id, rows)
            drift[device_id] = self.dockings(device_id)
            devices.append(self.device_summary(device_id, rows))
        self.findings.sort(key=lambda f: (f["t_us"] is None, f["t_us"] or 0, f["device"]))
        counts: dict[str, dict[str, int]] = {
            "by_code": dict(Counter(f["code"] for f in self.findings)),
            "by_device": dict(Counter(f["device"] for f in self.findings)),
            "by_officer": dict(Counter(f["officer"] for f in self.findings if f["officer"])),
            "by_case": dict(Counter(f["case"] for f in self.findings if f["case"])),
        }
        s = self.scope
        units = sorted({str(d["name"]) for d in self.vault.docks()})
        return {
            "format": "bodycam-compliance/1", "vault": self.vault.origin,
            "docks": units, "as_of": times.iso(self.as_of),
            "period": {"from": times.iso(s.start_us), "to": times.iso(s.end_us)},
            "filters": {"device": s.device, "officer": s.officer, "case": s.case},
            "bounds": {"late_offload_h": s.late_offload_h, "not_docked_days": s.not_docked_days,
                       "clock_bound_us": s.clock_bound_us},
            "findings": self.findings, "counts": counts, "phases": phases, "drift": drift,
            "devices": devices,
        }

    # -- phases --------------------------------------------------------------------------------

    def phases(self, device_id: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        spans = {int(r["seq"]): (r["t_start"], r["t_end"]) for r in rows
                 if r["kind"] == "segment"}
        holdings = self.recorders.holdings(device_id)
        self.holdings[device_id] = holdings
        out = []
        for p in device_timeline(self.vault, device_id):
            if not self.scope.within(p.started_us):
                continue
            if self.scope.officer not in (None, p.officer) or self.scope.case not in (None,
                                                                                    p.case):
                continue
            where: dict[str, Any] = {"officer": p.officer, "case": p.case, "row": p.row}
            first = p.segments[:1] or [e["seq"] for e in p.events[:1]]
            for g in p.gaps:
                self.add("gap_in_phase", device_id, g["t_last"],
                         f"row {p.row} broke: {g['cause']} from {times.iso(g['t_last'])}"
                         f" to {times.iso(g['t_boot'])}", records=[g["seq"]], **where)
                if g["cause"] == "storage_full":
                    self.add("storage_full", device_id, g["t_last"], "the card filled up"
                             " during a mandated phase", records=[g["seq"]], **where)
            if not p.segments:
                self.add("no_segment", device_id, p.started_us,
                         f"row {p.row} ({p.matter}, {p.stage}) has no segment", **where)
            for r in p.refusals:
                self.add("refused", device_id, r["t"],
                         f"{r['detail'].get('action', '?')} refused:"
                         f" {r['detail'].get('reason', '')}", records=[r["seq"]], **where)
            if not p.notice_given:
                self.add("no_notice", device_id, p.started_us,
                         f"row {p.row}: no notice to the party recorded", records=first,
                         **where)
            if p.ended_us is None:
                self.add("not_ended", device_id, p.started_us,
                         f"row {p.row} not ended in the records offloaded so far", **where)
            self.check_officer(device_id, p.officer, p.started_us, holdings, where)
            end = p.ended_us if p.ended_us is not None else max(
                [spans[s][1] for s in p.segments if s in spans] or [p.started_us])
            length = max(end - p.started_us, 0)
            out.append({
                "device": device_id, **where, "matter": p.matter, "stage": p.stage,
                "started": times.iso(p.started_us), "ended": times.iso(p.ended_us),
                "started_us": p.started_us, "ended_us": p.ended_us, "length_us": length,
                "recorded_us": p.recorded_us,
                "coverage": round(min(p.recorded_us / length, 1.0), 4) if length else 0.0,
                "segments": [list(spans[s]) for s in p.segments if s in spans],
                "gaps": [[g["t_last"], g["t_boot"]] for g in p.gaps],
                "refusals": len(p.refusals), "notice": p.notice_given,
                "findings": p.findings})
        return out

    def check_officer(self, device_id: str, officer: str, t_us: int, holdings: list[Holding],
                      where: dict[str, Any]) -> None:
        if not holdings or (times.iso(t_us) or "") < holdings[0].issued_at:
            return  # this recorder's custody was not kept in this vault then
        holder = self.holder_at(device_id, t_us)
        if holder != officer:
            self.add("other_officer", device_id, t_us,
                     f"row {where['row']} recorded by {officer}, but the recorder was "
                     + (f"issued to {holder}" if holder else "not issued to anyone")
                     + " then", **where)

    # -- records and dockings ------------------------------------------------------------------

    def records(self, device_id: str, rows: list[dict[str, Any]]) -> None:
        late: list[tuple[int, int]] = []  # (seq, delay µs)
        unset: list[int] = []
        for r in rows:
            t_end = r["t_end"]
            if not self.scope.within(t_end if isinstance(t_end, int) else None):
                continue
            seq = int(r["seq"])
            if r["clock_state"] == "unset":
                unset.append(seq)
            elif isinstance(t_end, int):
                delay = times.parse(str(r["stored_at"])) - t_end
                if delay > self.scope.late_offload_h * HOUR_US:
                    late.append((seq, delay))
        if late:
            worst = max(d for _, d in late)
            self.add("late_offload", device_id, None,
                     f"{len(late)} record(s) stored more than {self.scope.late_offload_h} h"
                     f" after recording (worst {worst / HOUR_US:.1f} h)",
                     records=[s for s, _ in late])
        if unset:
            self.add("clock_never_set", device_id, None,
                     f"{len(unset)} record(s) signed with a clock never set (records"
                     f" {unset[0]}–{unset[-1]})", records=unset)
        events = self.vault.events(device_id=device_id)
        by_seq = {int(str(e["seq"])): e for e in events}
        for e in events:
            if e["name"] == "low_battery_override" and self.scope.within(int(str(e["t"]))):
                detail = e["detail"] if isinstance(e["detail"], dict) else {}
                seq = int(str(e["seq"]))
                # signed just before the phase it let start: that phase names officer and case
                started = by_seq.get(seq + 1) or e
                officer, case, row = (started["officer"], started["case_no"],
                                      started["phase_row"])
                self.add("battery_override", device_id, int(str(e["t"])),
                         f"phase started on a main battery at {detail.get('pct')}% (floor"
                         f" {detail.get('floor')}%)",
                         officer=officer if isinstance(officer, str) else None,
                         case=case if isinstance(case, str) else None, records=[seq],
                         row=row if isinstance(row, int) else None)

    def dockings(self, device_id: str) -> list[dict[str, Any]]:
        series = []
        last = None
        for docking in self.vault.dockings(device_id):
            docking_id, at = docking["id"], str(docking["at"])
            report: dict[str, Any] = docking["report"]  # type: ignore[assignment]
            last = at
            t_us = times.parse(at)
            if not self.scope.within(t_us):
                continue
            clock = report.get("clock") or {}
            offset = clock.get("offset_before_us")
            if isinstance(offset, int):
                series.append({"at": at, "t_us": t_us, "offset_us": offset})
                if abs(offset) > self.scope.clock_bound_us:
                    self.add("clock_drift", device_id, t_us,
                             f"clock off by {span(offset)} at docking #{docking_id}"
                             f" (bound {span(self.scope.clock_bound_us)})")
            readiness = report.get("readiness") or {}
            if readiness.get("ready") is False:
                self.add("readiness_failed", device_id, t_us,
                         f"not ready for duty at docking #{docking_id}: "
                         + "; ".join(readiness.get("reasons") or ["no reason given"]))
            health = (readiness.get("status") or {}).get("health") or {}
            if health.get("foreign"):
                names = [str(f) for f in health["foreign"]][:5]
                self.add("foreign_files", device_id, t_us,
                         f"{len(health['foreign'])} foreign file(s) on the card: "
                         + ", ".join(names))
            if health.get("storage_full"):
                self.add("storage_full", device_id, t_us,
                         f"the card was full at docking #{docking_id}")
        bound = self.scope.not_docked_days * DAY_US
        if last is None:
            self.add("not_docked", device_id, None, "never docked")
        elif self.as_of - times.parse(last) > bound:
            self.add("not_docked", device_id, times.parse(last),
                     f"not docked since {last} (more than {self.scope.not_docked_days} days)")
        return series

    def device_summary(self, device_id: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
        docking = self.recorders.last_docking(device_id)
        return {"device": device_id, "records": len(rows),
                "holder": self.recorders.holder(device_id),
                "last_docking": docking["at"] if docking else None,
                "findings": sum(1 for f in self.findings if f["device"] == device_id)}


def span(us: int) -> str:
    """A clock offset for people: "-2.5 ms", "3.1 s", "4.2 h", "53.9 days"."""
    sign, n = ("-" if us < 0 else ""), abs(us)
    for unit, size in (("days", DAY_US), ("h", HOUR_US), ("s", 1_000_000)):
        if n >= size:
            return f"{sign}{n / size:.1f} {unit}"
    return f"{sign}{n / 1000:.1f} ms"
