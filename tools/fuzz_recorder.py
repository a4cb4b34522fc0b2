#!/usr/bin/env python3
"""Fire hostile requests at a recorder while it records a mandated phase, then prove nothing
was lost: `python3 tools/fuzz_recorder.py [--requests 100000] [--seed 1] [--json]`.

The recorder is the real firmware (mpy-cross build) in the MicroPython unix port on a pty,
under the HIL heap ceiling, commissioned to a lab unit. It starts an on-site investigation
(annex row 4: continuous), then takes `--requests` requests in valid frames and valid CBOR
with hostile values (tests/hil/fuzz_wire.py), some inside certified sessions (forged and
replayed receipts, reads past the end, extreme clock steps). Afterwards: the process must be
alive and still recording, the phase is ended, a certified dock offloads everything, and the
vault must verify with an unbroken chain, no gap record and recording all along. Prints the
figures; exit status 1 if any check failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests/hil/fuzz_wire.py holds the request generator

from host_agent.dock import DockSession, dock  # noqa: E402
from host_agent.lab.simulator import SimConfig, SimulatedRecorder  # noqa: E402
from host_agent.lab.unit import lab_unit  # noqa: E402
from host_agent.transport.serial import SerialTransport  # noqa: E402
from host_agent.vault import Vault, timeline  # noqa: E402
from tests.hil.conftest import HEAPSIZE  # noqa: E402
from tests.hil.fuzz_wire import fire  # noqa: E402


def run(requests: int, seed: int, work: Path) -> dict[str, Any]:
    unit, identity = lab_unit(work / "pki", "fuzz-dock")
    cfg = SimConfig(segments=0, segment_ms=2000, bitrate=2_000_000, heapsize=HEAPSIZE,
                    unit_key=unit.public.hex(), skew_us=0, drift_ppm=0)
    with SimulatedRecorder(work / "rec", cfg, work / "rec.log") as rec:
        rec.wait_for("ready for the dock", timeout=60)
        rec.press("phase_start 4 FUZZ-1 4501-0001")
        t_start = time.time()
        try:
            figures = fire(rec.port, requests, seed, identity)
        except RuntimeError as exc:  # it stopped answering: say how it stood, then stop
            alive = rec.proc is not None and rec.proc.poll() is None
            return {"ok": False, "error": str(exc), "alive": alive,
                    "log_tail": rec.log_text()[-3000:], "checks": {"every request answered":
                                                                   False}}
        alive = rec.proc is not None and rec.proc.poll() is None
        transport = SerialTransport(rec.port)
        transport.open()
        try:
            with Vault.open(work / "vault") as vault:
                session = DockSession(transport, vault, identity, enroll_unknown=True,
                                      timeout=10.0)
                session.identify()
                status = session.request("get_status")
                rec.press("end_request investigation ends")
                rec.press("end_confirm")
                rec.press("stop")
                rec.wait_for("indicator: idle\n", timeout=30)
                report = dock(session)
                problems = vault.verify()
                records = timeline.load_records(vault, report.device_id)
                phases = timeline.rebuild(records)
        finally:
            transport.close()
        t_end = time.time()
    seqs = [r["seq"] for r in records]
    segments = [r for r in records if r["kind"] == "segment"]
    # Time recorded, from the bytes (the camera's rate is fixed); the segments' timestamps
    # would not do, since the fuzzer's certified sessions step the clock under them.
    recorded_s = sum(r["size"] for r in segments) * 8 / cfg.bitrate
    checks = {
        "recorder alive after the fuzz": alive,
        "still recording after the fuzz": bool(status["recording"]),
        "every request answered": figures.answered >= figures.sent,
        "vault verifies": not problems,
        "chain unbroken": seqs == list(range(1, len(seqs) + 1)),
        "no gap record": not [r for r in records if r["kind"] == "gap"],
        "the phase was recorded throughout": bool(phases) and not phases[0].gaps
        and recorded_s >= 0.8 * (t_end - t_start - 5),
    }
    return {
        "requests": figures.sent, "answered": figures.answered,
        "seconds": round(figures.seconds, 1), "requests_per_s": round(figures.per_s),
        "certified_sessions": figures.sessions, "answers": dict(figures.codes.most_common()),
        "internal": sorted(set(figures.internal)),
        "records": len(records), "segments": len(segments),
        "recorded_s": round(recorded_s, 1), "wall_s": round(t_end - t_start, 1),
        "device_errors_logged": rec.log_text().count("error to dock"),
        "problems": [p.__dict__ for p in problems], "checks": checks,
        "ok": all(checks.values()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true")
    p.add_argument("--work", type=Path, help="keep the recorder's card, log and vault here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bodycam-fuzz-") as tmp:
        result = run(args.requests, args.seed, args.work or Path(tmp))
    if args.json:
        print(json.dumps(result, indent=2))
    elif "error" in result:
        print(f"FAIL: {result['error']}; the recorder is "
              f"{'alive' if result['alive'] else 'dead'}; its log ends:\n{result['log_tail']}")
    else:
        print(f"{result['requests']} hostile requests in {result['seconds']} s "
              f"({result['requests_per_s']}/s), {result['answered']} answered, "
              f"{result['certified_sessions']} certified sessions opened amid them")
        print("answers: " + ", ".join(f"{k} {v}" for k, v in result["answers"].items()))
        for detail in result["internal"]:
            print(f"  internal: {detail}")
        print(f"recorder: {result['segments']} segments, {result['recorded_s']} s recorded in "
              f"{result['wall_s']} s of wall time; {result['records']} records in the vault")
        for name, ok in result["checks"].items():
            print(f"  {'ok  ' if ok else 'FAIL'} {name}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
