"""What the `bodycam` command shows: logs, progress bars, the docking report, phases."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

from host_agent import logs
from host_agent.dock import DockReport


def fail(what: str, exc: BaseException) -> int:
    """Say on stderr, in one line, why `what` failed (a file error as `file: reason`, never a
    traceback); the exit code for it, 2."""
    reason = (f"{exc.filename}: {exc.strerror}" if isinstance(exc, OSError) and exc.filename
              else str(exc))
    print(f"{what}: {reason}", file=sys.stderr)
    return 2


def setup_logging(verbose: int, json_logs: bool) -> None:
    logs.setup_logging(logging.DEBUG if verbose > 1 else logging.INFO if verbose else
                       logging.WARNING, json_lines=json_logs)


class ProgressBar:
    """A one-line bar on stderr, only when stderr is a terminal."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.enabled = sys.stderr.isatty()
        self.t0 = time.monotonic()
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self._last < 0.1 and done < total):
            return
        self._last = now
        frac = done / total if total else 1.0
        rate = done / max(1e-9, now - self.t0) / 1e6
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\r{self.label} [{bar:<30}] {frac:5.1%} {rate:7.1f} MB/s")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def fmt_us(us: int) -> str:
    if abs(us) >= 1_000_000:
        return f"{us / 1e6:+.3f} s"
    if abs(us) >= 1_000:
        return f"{us / 1e3:+.3f} ms"
    return f"{us:+d} µs"


def format_report(r: DockReport) -> str:
    st = r.readiness["status"]
    main, backup, storage = st["battery_main"], st["battery_backup"], st["storage"]
    off = r.offload
    lines = [
        f"Recorder      {r.device_id}  firmware {r.firmware}",
        f"Device key    {r.key_fingerprint}" + ("  (enrolled now)" if r.newly_enrolled else ""),
        f"Clock         offset before sync {fmt_us(r.clock['offset_before_us'])}"
        f" (±{r.clock['bound_before_us']} µs)",
        f"              offset after sync  {fmt_us(r.clock['offset_after_us'])}"
        f" (±{r.clock['bound_after_us']} µs)",
        f"Main battery  {main['mv']} mV  {main['pct']}%"
        + ("  charging" if main["charging"] else ""),
        f"Backup cell   {backup['mv']} mV  {backup['pct']}%",
        f"Storage       {storage['free'] / 2**30:.1f} GiB free"
        f" of {storage['total'] / 2**30:.1f} GiB",
        f"Offload       {len(off['stored'])} records ({off['segments']} segments) verified and"
        f" stored, {len(off['released'])} released on the device,"
        f" {len(off['quarantined'])} quarantined",
        f"              {off['bytes'] / 1e6:.1f} MB in {off['seconds']:.2f} s = "
        f"{off['mb_per_s']:.1f} MB/s",
    ]
    for q in off["quarantined"]:
        what = "the data of record" if q.get("record_stored") else "record"
        lines.append(f"  QUARANTINED {what} {q['seq']}: {q['code']}: {q['detail']}")
    for b in off.get("chain_breaks", []):
        lines.append(f"  CHAIN BREAK before record {b['seq']}: {b['detail']}")
    for h in off.get("held", []):
        lines.append(f"  LEFT ON THE RECORDER record {h['seq']}: {h['detail']}")
    foreign = st["health"].get("foreign", [])
    if foreign:  # a card mounted elsewhere, or leftovers of a cut on FAT: a person looks
        lines.append("Card          files that are not the recorder's (ignored): "
                     + ", ".join(str(f) for f in foreign))
    if r.policy:
        lines.append("Policy        " + ", ".join(f"{k} {v}" for k, v in r.policy.items()))
    for p in r.phases:
        lines += format_phase(p)
    verdict = "READY for duty" if r.readiness["ready"] else "NOT READY: " + "; ".join(
        r.readiness["reasons"])
    lines += [f"Readiness     {verdict}", f"Vault         {r.vault}"]
    return "\n".join(lines)


def clock_time(us: int | None) -> str:
    if us is None:
        return "—"
    return datetime.fromtimestamp(us / 1e6, UTC).strftime("%H:%M:%S.%f")[:-3] + "Z"


def format_phase(p: dict[str, Any]) -> list[str]:
    ended = (f"ended {clock_time(p['ended_us'])} on “{p['end_trigger']}”" if p["ended_us"]
             else "still open")
    lines = [
        f"Phase         row {p['row']} ({p['matter']}, {p['stage']}) case {p['case']}"
        f" officer {p['officer']}",
        f"              started {clock_time(p['started_us'])}, {ended};"
        f" {len(p['segments'])} segments, {p['recorded_us'] / 1e6:.1f} s recorded",
        f"              notice to the party: {'given' if p['notice_given'] else 'NOT RECORDED'}",
    ]
    for e in p["refusals"]:
        lines.append(f"              refused {e['detail'].get('action')} at {clock_time(e['t'])}:"
                     f" {e['detail'].get('reason')}")
    for e in p["events"]:
        if e["event"] not in ("refused", "phase_ended", "notice_given"):
            lines.append(f"              {e['event']} at {clock_time(e['t'])}")
    for finding in p["findings"]:
        lines.append(f"  FINDING: {finding}")
    return lines


def emit(args: argparse.Namespace, report: DockReport) -> None:
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=json_default))
    else:
        print(format_report(report))


def json_default(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return obj.hex()
    raise TypeError(f"not JSON: {type(obj).__name__}")
