#!/usr/bin/env python3
"""Docking over a noisy line, against the channel's limit:
`python3 tools/bench_noisy.py [--seeds 3] [--kb 300] [--rates 1e-4 ...] [--json]`.

The recorder (its mpy-cross firmware in the MicroPython unix port) sits on a null modem made a
921 600-baud UART (8N1: 92 160 bytes/s each way) that flips bits in both directions at a
bit-error rate of 1e-6, 1e-5, 1e-4 and 1e-3 (fresh seeds each run). Each docking is one
`dock()` call: it must store and release everything and the vault must verify. Printed per
rate: the goodput (segment bytes over offload time, median of the seeds: listing, records,
receipts and releases included) and the data phase's (segment bytes over the time spent
fetching segment data) beside

- the limit: the line's byte rate times the best efficiency any framed protocol with our
  per-chunk overhead (frame + chunk header, host_agent/dock/fetch.py OVERHEAD) could reach on
  that channel: n/(n+h)·(1-BER)^(8(n+h)) at the best n;
- the clean-line goodput of the same run (BER 0, same UART).

The rates are those of a pty throttled to a UART's, on a host CPU: they measure the protocol
on the channel, not an MCU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests/hil/conftest.py: the docked() rig

from host_agent.dock import dock  # noqa: E402
from host_agent.dock.fetch import OVERHEAD, best_chunk, limit  # noqa: E402
from host_agent.lab.nullmodem import Impairment  # noqa: E402
from host_agent.vault import Vault  # noqa: E402
from tests.hil.conftest import docked  # noqa: E402

BAUD = 921_600
LINE_BYTES_PER_S = BAUD / 10  # 8N1
RATES = (0.0, 1e-6, 1e-5, 1e-4, 1e-3)


def line(ber: float, seed: int) -> Impairment:
    return Impairment.uart(BAUD, flip_rate=1.0 - (1.0 - ber) ** 8 if ber else 0.0, seed=seed)


def one(ber: float, seed: int, kb: int) -> dict[str, Any]:
    segments = 3
    bitrate = kb * 1000 * 8 // segments  # segment_ms 1000: each segment kb/3 kilobytes
    with tempfile.TemporaryDirectory(prefix="bench-noisy-") as tmp:
        work = Path(tmp)
        t0 = time.monotonic()
        with docked(work, up=line(ber, seed), down=line(ber, seed + 1000), segments=segments,
                    segment_ms=1000, bitrate=bitrate, skew_us=0, drift_ppm=0) as (rec, session):
            session.timeout = 1.0
            report = dock(session)
            damaged = rec.modem.up.flipped + rec.modem.down.flipped
        with Vault.open(work / "vault", create=False) as vault:
            ok = vault.verify() == []
        off = report.offload
        return {
            "ber": ber, "seed": seed, "bytes": off["bytes"], "seconds": off["seconds"],
            "goodput": off["bytes"] / off["seconds"] if off["seconds"] else 0.0,
            "data_goodput": off["bytes"] / off["data_seconds"] if off["data_seconds"] else 0.0,
            "stored_all": off["stored"] == off["released"] and not off["quarantined"]
            and not off["held"] and off["segments"] == segments,
            "verified": ok, "flipped_bits": damaged, "repeats": off["repeats"],
            "estimated_ber": off["line_ber"], "docking_s": time.monotonic() - t0,
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--kb", type=int, default=300, help="segment data per docking")
    p.add_argument("--seed-base", type=int, default=int(time.time()) % 100_000)
    p.add_argument("--rates", type=float, nargs="+", default=list(RATES[1:]), metavar="BER",
                   help="bit-error rates to dock through (the clean line is always run)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rates = [0.0] + [r for r in args.rates if r > 0]
    runs = [one(ber, args.seed_base + 100 * i + k, args.kb)
            for i, ber in enumerate(rates) for k in range(args.seeds)]
    clean = statistics.median(r["goodput"] for r in runs if r["ber"] == 0.0)
    rows = []
    for ber in rates[1:]:
        mine = [r for r in runs if r["ber"] == ber]
        goodput = statistics.median(r["goodput"] for r in mine)
        data = statistics.median(r["data_goodput"] for r in mine)
        lim = LINE_BYTES_PER_S * limit(ber)
        rows.append({"ber": ber, "goodput_kb_s": goodput / 1e3, "limit_kb_s": lim / 1e3,
                     "ratio": goodput / lim, "data_kb_s": data / 1e3, "data_ratio": data / lim,
                     "clean_kb_s": clean / 1e3,
                     "best_chunk": best_chunk(ber),
                     "all_stored_and_verified": all(r["stored_all"] and r["verified"]
                                                    for r in mine),
                     "estimated_ber": statistics.median(r["estimated_ber"] for r in mine),
                     "runs": len(mine)})
    ok = all(r["all_stored_and_verified"] and r["ratio"] >= 0.7 for r in rows)
    if args.json:
        print(json.dumps({"rows": rows, "runs": runs, "overhead": OVERHEAD, "ok": ok}, indent=2))
    else:
        print(f"921600-baud UART (8N1, {LINE_BYTES_PER_S / 1e3:.2f} kB/s), bits flipped both"
              f" ways; {args.kb} kB per docking; {args.seeds} seeds each; chunk overhead"
              f" {OVERHEAD} B")
        print(f"clean line (BER 0): {clean / 1e3:.1f} kB/s "
              f"({clean / LINE_BYTES_PER_S:.1%} of the line)")
        print("| BER | goodput kB/s | limit kB/s | ratio | data phase kB/s | ratio | clean"
              " kB/s | best chunk | estimated BER | all stored, verified |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['ber']:.0e} | {r['goodput_kb_s']:.1f} | {r['limit_kb_s']:.1f} |"
                  f" {r['ratio']:.2f} | {r['data_kb_s']:.1f} | {r['data_ratio']:.2f} |"
                  f" {r['clean_kb_s']:.1f} | {r['best_chunk']} B |"
                  f" {r['estimated_ber']:.1e} | {'yes' if r['all_stored_and_verified'] else 'NO'}"
                  f" ({r['runs']}) |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
