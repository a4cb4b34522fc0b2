#!/usr/bin/env python3
"""Every crash point of the recorder's writes, on littlefs, FAT and a host directory, each
followed (with --dock-every) by a real docking of the crashed card.

    python3 tools/crash_points.py [--fs lfs2,fat,posix] [--dock-every K] [--double K]
                                  [--json OUT] [--work DIR]

For each file system, tests/mpy/crash_points.py runs inside MicroPython: every block write
(littlefs and FAT on a block device in RAM) or every file operation (VfsPosix) is a crash
point; the recorder is rebooted on the card as the cut left it and checked (see that file);
with --double (default: every point) the recovery itself is cut at each of its writes, and
the card rebooted and checked again.
With --dock-every K, every K-th crashed card is also booted by the simulated board
(host_agent/lab/simulator.py, from the card image or directory) and docked by the real dock
into a vault that holds what was released before the cut: every record durable before the
cut must be stored, nothing quarantined, and the vault must verify. Prints per file system:
write points, crash points checked, lost, quarantined, problems, time; exits 1 on any loss,
quarantine or problem.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from host_agent.lab.unit import lab_unit  # noqa: E402
from tests.hil.test_crash_points import dock_point, enumerate_points  # noqa: E402
from tests.micropython_runner import micropython_cmd  # noqa: E402


def machine() -> str:
    """What the figures were measured on: CPU, cores, MicroPython."""
    model = platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mpy = subprocess.run(micropython_cmd() + ["-c", "import sys; print(sys.version)"],
                         capture_output=True, text=True).stdout.strip()
    return f"{os.cpu_count()} x {model} ({platform.machine()}); MicroPython {mpy} unix port"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fs", default="lfs2,fat,posix", help="file systems, comma-separated")
    parser.add_argument("--dock-every", type=int, default=0, metavar="K",
                        help="dock every K-th crash point (0: no dockings)")
    parser.add_argument("--double", type=int, default=1, metavar="K",
                        help="every K-th crash point, also cut at each write of its recovery "
                             "(0: never; default 1: every crash point)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--work", type=Path, help="keep the cards and vaults here")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="crash-points-"))
    unit, identity = lab_unit(work / "pki", "crash-dock")
    rows = []
    failed = False
    print(f"machine: {machine()}; work in {work}", flush=True)
    for fs in args.fs.split(","):
        dump = work / fs / "dump" if args.dock_every else None
        e = enumerate_points(fs, work / fs, unit, dump, every=max(1, args.dock_every),
                             double=args.double, rerun=0 if fs == "posix" else 3)
        row = {"fs": fs, "write_points": e.points, "checked": e.checked, "lost": e.lost,
               "quarantined": e.quarantined, "problems": e.problems, "seconds": e.seconds,
               "details": e.result}
        for line in e.output.splitlines():
            if line.startswith("PROBLEM"):
                print(f"  {fs}: {line}")
        if dump is not None:
            info = json.loads((dump / f"{fs}.json").read_text())
            t0 = time.monotonic()
            docked = lost = quarantined = problems = 0
            for point in info["points"]:
                d = dock_point(fs, dump, point, info, work / fs / "dock", unit, identity)
                docked += 1
                lost += len(d.lost)
                quarantined += d.quarantined
                problems += len(d.problems) + (len(d.gaps) > 1)
                if d.lost or d.quarantined or d.problems or len(d.gaps) > 1:
                    print(f"  {fs}: docking of crash point {d.point}: {d}")
            row.update(dockings=docked, dock_lost=lost, dock_quarantined=quarantined,
                       dock_problems=problems, dock_seconds=round(time.monotonic() - t0, 1))
        rows.append(row)
        failed |= bool(e.lost or e.quarantined or e.problems or row.get("dock_lost")
                       or row.get("dock_quarantined") or row.get("dock_problems"))
        docks = (f"; dockings {row['dockings']}: lost {row['dock_lost']}, quarantined "
                 f"{row['dock_quarantined']}, problems {row['dock_problems']}, "
                 f"{row['dock_seconds']} s" if dump is not None else "")
        print(f"{fs:6} write points {e.points:5}  checked {e.checked:5} (+{e.result['double']} "
              f"cut again in recovery)  lost {e.lost}  quarantined {e.quarantined}  problems "
              f"{e.problems}  {e.seconds:.1f} s{docks}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "file_systems": rows}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
