#!/usr/bin/env python3
"""The long fault campaign: hundreds of random power cuts, agent kills, clock jumps, full disks.

    python3 tools/fault_campaign.py [--trials 200] [--seed 1] [--json out.json]

Runs the trials of tests/hil/test_faults.py (the CI runs a few of each) against recorders
that live through many of them (a new recorder and vault every --lifetime trials), checks the
invariants after each (no segment lost, none duplicated, vault verifies, the device freed only
what the vault holds), and prints a summary and a JSON report. Exit status 1 if any broke.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.hil.test_faults import (  # noqa: E402
    InvariantBroken,
    Lineage,
    trial_agent_kill,
    trial_clock_jump,
    trial_device_kill,
    trial_disk_full,
)

MIX = [("agent_kill", trial_agent_kill, 10), ("device_kill", trial_device_kill, 10),
       ("clock_jump", trial_clock_jump, 3), ("disk_full", trial_disk_full, 1)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--lifetime", type=int, default=20, help="trials per recorder and vault")
    ap.add_argument("--json", help="write the report here too")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    # SIGTERM unwinds like Ctrl-C, so each trial's recorders are stopped, not orphaned.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="fault-campaign-"))
    results: list[dict[str, Any]] = []
    life = Lineage(work / "life-0")
    t0 = time.monotonic()
    names = [n for n, _, w in MIX for _ in range(w)]
    funcs = {n: f for n, f, _ in MIX}
    for i in range(args.trials):
        if i and i % args.lifetime == 0:
            life = Lineage(work / f"life-{i // args.lifetime}")
        name = rng.choice(names)
        start = time.monotonic()
        try:
            res = funcs[name](life, rng)
            res["ok"] = True
        except InvariantBroken as exc:
            res = {"fault": name, "ok": False, "broken": str(exc)}
        except Exception as exc:  # noqa: BLE001 - a trial that cannot run is reported, not hidden
            res = {"fault": name, "ok": False, "error": f"{type(exc).__name__}: {exc}",
                   "trace": traceback.format_exc()[-1500:]}
        if res.get("skipped"):
            continue
        res["trial"] = i
        res["seconds"] = round(time.monotonic() - start, 2)
        results.append(res)
        mark = "ok " if res["ok"] else "BAD"
        print(f"{i:4d} {mark} {name:12s} {res.get('outcome', '')[:28]:28s} "
              f"{res['seconds']:5.2f}s {res.get('broken') or res.get('error') or ''}",
              flush=True)
    summary = summarise(results, time.monotonic() - t0)
    print_summary(summary)
    report = {"summary": summary, "trials": results, "seed": args.seed}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(summary))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"work directory kept: {work}")
    return 0 if summary["broken"] == 0 and summary["errors"] == 0 else 1


def summarise(results: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    by: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for r in results:
        c = by[r["fault"]]
        c["trials"] += 1
        c["ok"] += bool(r["ok"])
        if str(r.get("outcome", "")).startswith("killed"):
            c["killed_mid_docking"] += 1
    broken = [r for r in results if "broken" in r]
    return {
        "trials": len(results),
        "seconds": round(seconds, 1),
        "ok": sum(1 for r in results if r["ok"]),
        "broken": len(broken),
        "errors": sum(1 for r in results if "error" in r),
        "lost": sum(1 for r in broken if "lost" in r["broken"] or "freed" in r["broken"]),
        "duplicated": sum(1 for r in broken if "duplicat" in r["broken"]
                          or "objects for" in r["broken"]),
        "by_fault": {k: dict(v) for k, v in sorted(by.items())},
    }


def print_summary(s: dict[str, Any]) -> None:
    print(f"\n{s['trials']} trials in {s['seconds']} s: {s['ok']} ok, {s['broken']} broke an "
          f"invariant ({s['lost']} lost, {s['duplicated']} duplicated), {s['errors']} errors")
    print(f"{'fault':14s} {'trials':>6s} {'ok':>5s} {'killed mid-docking':>19s}")
    for name, c in s["by_fault"].items():
        print(f"{name:14s} {c.get('trials', 0):6d} {c.get('ok', 0):5d} "
              f"{c.get('killed_mid_docking', 0):19d}")


if __name__ == "__main__":
    sys.exit(main())
