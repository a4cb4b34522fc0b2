#!/usr/bin/env python3
"""An officer's shift on the recorder firmware, time accelerated, inside a board's heap.

    python3 tools/shift.py [--hours 8] [--rate 120] [--heapsize 256k] [--link serial|mqtt]
                           [--segment-s 60] [--bitrate 64000] [--keep DIR] [--json]

The recorder is the mpy-cross firmware in the MicroPython unix port
(host_agent/lab/simulator.py) under `-X heapsize=`, commissioned to a lab unit. Its simulated
time (clock, camera pacing, battery drain: device/boards/unix_sim/hal.py SimTime) runs `rate`
times fast on duty and at real time while it is docked, so a shift of hours takes minutes and
each docking syncs the clock as a dock would. The firmware is the same code a board runs: only
the board's simulated parts see the rate.

The shift (PLAN, minutes of an 8-hour day, scaled to --hours): standby with the policy's
pre-event buffer, ad hoc recordings (with mute outside a phase), seven mandated phases of the
annex with the notice, warnings, bookmarks, refused pause/stop/mute and a refused end on the
wrong trigger, the main battery draining below the policy's floor before the last phase (a
battery_low event, then a low_battery_override), a docking at midday and one at the end of
the shift (serial through pyserial, or MQTT through a mosquitto the tool starts). Each docking
stores, verifies and releases what the recorder made; at the end the recorder holds nothing
and the vault verifies.

Heap: the board's probe (`--heap-probe 1`, device/boards/unix_sim/hal.py HeapProbe) collects
and samples the heap in use at every log line and before every answer to the dock, and keeps
the peak. "Live after imports" is what the modules the firmware imported hold once loaded
(bytecode and module state: measured in a fresh MicroPython of the same heap importing the same
modules from the same build). On the unix port the bytecode lives in that heap; a board keeps
it in flash, so the data-heap figure (in use minus live after imports) is the one a board's RAM
must hold. These are 64-bit unix-port figures (16-byte words per object slot, 32-byte GC
blocks): a 32-bit MCU port needs less for the same objects.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from host_agent.dock.session import DockSession, dock  # noqa: E402
from host_agent.lab.firmware import cached_build  # noqa: E402
from host_agent.lab.simulator import SimConfig, SimulatedRecorder, micropython_command  # noqa: E402
from host_agent.lab.unit import lab_unit  # noqa: E402
from host_agent.vault import Vault, timeline  # noqa: E402

CASE = "GXSL-2026-0417"
OFFICER = "4501-0233"

# (minute of an 8-hour shift, action): the officer's buttons. "dock" docks the recorder.
PLAN: list[tuple[float, str]] = [
    (4, "record"),  # a word with a passer-by: an ad hoc recording, no phase
    (9, "bookmark roadside talk"),
    (12, "stop"),
    (20, "phase_start 15 {case}-1 {officer}"),  # annex row 15: on-site inspection
    (21, "notice whole process recorded"),
    (35, "pause"),  # refused: the row is recorded without interruption
    (50, "bookmark intake pipe"),
    (62, "mute"),  # refused
    (75, "end_request not the trigger"),  # refused: not the row's end trigger
    (85, "end_request inspection ends"),
    (85, "end_confirm"),
    (86, "stop"),
    (100, "phase_start 4 {case}-2 {officer}"),  # row 4: on-site investigation
    (101, "notice whole process recorded"),
    (120, "warning party obstructs the investigation"),
    (130, "stop"),  # refused
    (150, "bookmark pump house"),
    (175, "end_request investigation ends"),
    (175, "end_confirm"),
    (176, "stop"),
    (185, "phase_start 5 {case}-2 {officer}"),  # row 5: interview record
    (186, "notice whole process recorded"),
    (200, "pause"),  # refused
    (215, "end_request questioning ends"),
    (215, "end_confirm"),
    (216, "stop"),
    (240, "dock"),  # midday: back at the station
    (255, "record"),
    (258, "mute"),  # outside a phase: allowed
    (262, "unmute"),
    (270, "stop"),
    (280, "phase_start 7 {case}-2 {officer}"),  # row 7: service of the decision
    (281, "notice whole process recorded"),
    (300, "end_request signature completed"),
    (300, "end_confirm"),
    (301, "stop"),
    (315, "phase_start 8 {case}-3 {officer}"),  # row 8: seizure
    (316, "notice whole process recorded"),
    (330, "warning party resists the seizure"),
    (340, "bookmark seized pump"),
    (360, "end_request signature completed"),
    (360, "end_confirm"),
    (361, "stop"),
    (380, "phase_start 12 {case}-3 {officer}"),  # row 12: enforcement on site
    (381, "notice whole process recorded"),
    (395, "pause"),  # refused
    (405, "mute"),  # refused
    (415, "stop"),  # refused
    (425, "bookmark demolition starts"),
    (440, "end_request coercion ends"),
    (440, "end_confirm"),
    (441, "stop"),
    (450, "phase_start 14 {case}-4 {officer}"),  # row 14: the battery is below the floor now
    (451, "notice whole process recorded"),
    (470, "end_request verification ends"),
    (470, "end_confirm"),
    (471, "stop"),
    (480, "dock"),  # end of the shift
]
SHIFT_MIN = 480
# Main battery: full at the start, below the policy's 20 % floor at about 7 h 20 of 8 h.
DRAIN_PCT_PER_8H = 88


class SimClock:
    """The harness's account of simulated time (seconds since the shift began)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._real0 = time.monotonic()
        self._sim0 = 0.0

    def now(self) -> float:
        return self._sim0 + (time.monotonic() - self._real0) * self.rate

    def set_rate(self, rate: int) -> None:
        self._sim0 = self.now()
        self._real0 = time.monotonic()
        self.rate = rate

    def wait_until(self, sim_s: float) -> None:
        ahead = (sim_s - self.now()) / self.rate
        if ahead > 0:
            time.sleep(ahead)


def live_after_imports(modules: list[str], heapsize: str) -> int:
    """Heap in use (after a collection) once `modules` are imported from the firmware build in
    a fresh MicroPython with this heap: the bytecode and module state, no data."""
    mods = [m for m in modules if m != "__main__"]
    script = (f"import gc\nfor m in {mods!r}:\n    __import__(m)\n"
              "gc.collect()\nprint(gc.mem_alloc())\n")
    build = cached_build()
    env = dict(os.environ, MICROPYPATH=f".frozen:{build}")
    proc = subprocess.run([micropython_command(), "-X", f"heapsize={heapsize}", "-c", script],
                          cwd=build, env=env, capture_output=True, text=True, timeout=60,
                          check=True)
    return int(proc.stdout.split()[-1])


@contextmanager
def _link(kind: str, work: Path):
    """(the SimConfig fields, a function making a transport for a docking)."""
    if kind == "serial":
        from host_agent.transport.serial import SerialTransport

        yield {}, lambda rec, device_id: SerialTransport(rec.port)
        return
    from host_agent.lab.broker import Mosquitto
    from host_agent.transport.mqtt import MqttTransport

    with Mosquitto(work / "broker") as broker:
        yield ({"mqtt": f"{broker.host}:{broker.port}"},
               lambda rec, device_id: MqttTransport(broker.host, broker.port, device_id))


def run_shift(work: Path, *, hours: float = 8.0, rate: int = 120, heapsize: str = "256k",
              link: str = "serial", segment_s: int = 60, bitrate: int = 64_000,
              gc_every: int = -1, progress=None) -> dict[str, Any]:
    """Run one shift in `work`; returns the figures (see main). Raises on any failure."""
    say = progress or (lambda text: None)
    scale = hours / 8.0
    plan = [(minute * scale * 60.0, action.format(case=CASE, officer=OFFICER))
            for minute, action in PLAN]
    first_dock = next(t for t, action in plan if action == "dock")
    unit, identity = lab_unit(work / "pki", "shift-dock")
    device_id = "SIM-SHIFT-1"
    t_start = time.monotonic()
    with _link(link, work) as (link_cfg, transport_for):
        cfg = SimConfig(
            segments=0, segment_ms=segment_s * 1000, bitrate=bitrate, heapsize=heapsize,
            unit_key=unit.public.hex(), device_id=device_id, pre_event_s=-1,  # the policy's
            main_pct=100, main_charging=False,
            main_drain=max(1, round(DRAIN_PCT_PER_8H / hours)), sim_rate=rate, heap_probe=True,
            # The clock reads the start of the shift: at the first docking it is about right.
            skew_us=-int(first_dock * 1e6 * (1 - 1 / rate)), drift_ppm=20, gc_every=gc_every,
            **link_cfg)
        vault = Vault.open(work / "vault")
        rec = SimulatedRecorder(work / "rec", cfg, work / "rec.log").start()
        dockings: list[dict[str, Any]] = []
        answers: list[tuple[str, str]] = []
        try:
            rec.wait_for("ready for the dock", timeout=60)
            clock = SimClock(rate)
            for at, action in plan:
                clock.wait_until(at)
                if action != "dock":
                    answers.append((action, rec.press(action)))
                    continue
                rec.set_rate(1)
                clock.set_rate(1)
                say(f"docking {len(dockings) + 1} at shift minute {at / 60:.0f}")
                t0 = time.monotonic()
                transport = transport_for(rec, device_id)
                transport.open()
                try:
                    report = dock(DockSession(transport, vault, identity, enroll_unknown=True))
                finally:
                    transport.close()
                off = report.offload
                if off["quarantined"] or off["held"] or off["chain_breaks"]:
                    raise RuntimeError(f"docking {len(dockings) + 1}: {off}")
                dockings.append({
                    "stored": len(off["stored"]), "first": off["stored"][0],
                    "last": off["stored"][-1], "segments": off["segments"],
                    "bytes": off["bytes"], "seconds": round(time.monotonic() - t0, 2),
                    "clock_step_s": round(report.clock["stepped_us"] / 1e6, 1),
                    "ready": report.readiness["ready"],
                    "not_ready": report.readiness["reasons"]})
                say(f"  stored {len(off['stored'])} records ({off['bytes'] / 1e6:.1f} MB)")
                rec.set_rate(rate)
                clock.set_rate(rate)
            heap = rec.heap()
        finally:
            rec.stop()
        wall = time.monotonic() - t_start
        log = rec.log_text()
        for bad in ("MemoryError", "Traceback", "recording task failed", "error to dock"):
            if bad in log:
                at = log.index(bad)
                raise RuntimeError(
                    f"the recorder logged {bad!r}:\n{log[max(0, at - 1500):at + 500]}")
        left = sorted(p.name for p in (work / "rec" / "rec").glob("*.cose"))
        if left:
            raise RuntimeError(f"records left on the recorder after the last docking: {left}")
        problems = vault.verify()
        rows = vault.records(device_id)
        signed = timeline.load_records(vault, device_id)
        vault.close()
    if problems:
        raise RuntimeError(f"the vault does not verify: {problems}")
    seqs = [int(r["seq"]) for r in rows]  # type: ignore[call-overload]
    stored = [s for d in dockings for s in range(d["first"], d["last"] + 1)]
    if seqs != list(range(1, len(seqs) + 1)) or seqs != stored:
        raise RuntimeError("the vault's records are not the recorder's chain, each once")
    kinds: dict[str, int] = {}
    for r in rows:
        kinds[str(r["kind"])] = kinds.get(str(r["kind"]), 0) + 1
    refused = [a for a, ans in answers if " refused:" in ans]
    events: dict[str, int] = {}
    for fields in signed:
        if fields["kind"] == "event":
            events[fields["event"]] = events.get(fields["event"], 0) + 1
    live = live_after_imports(heap["modules"], heapsize)  # type: ignore[arg-type]
    peak, used = int(heap["peak"]), int(heap["used"])  # type: ignore[call-overload]
    total = used + int(heap["free"])  # type: ignore[call-overload]
    sim_s = SHIFT_MIN * 60 * scale
    return {
        "heapsize": heapsize,
        "heap_bytes": total,
        "live_after_imports": live,
        "peak_in_use": peak,
        "data_heap_peak": peak - live,
        "data_heap_at_end": used - live,
        "heap_free_at_end": int(heap["free"]),  # type: ignore[call-overload]
        "largest_free_at_end": heap.get("largest_free", 0),
        "allocated": heap["allocated"],  # bytes allocated since boot: the collector's work
        "heap_samples": heap["samples"],
        "peak_at": heap["at"],
        "modules": len(heap["modules"]),  # type: ignore[arg-type]
        "records": len(seqs),
        "records_by_kind": kinds,
        "events": events,
        "recorded_bytes": sum(d["bytes"] for d in dockings),
        "refusals": len(refused),
        "actions": len(answers),
        "dockings": dockings,
        "link": link,
        "shift_hours": hours,
        "segment_s": segment_s,
        "bitrate": bitrate,
        "rate": rate,
        "wall_s": round(wall, 1),
        "acceleration": round(sim_s / wall, 1),
    }


def _kb(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=8.0, help="length of the shift")
    parser.add_argument("--rate", type=int, default=120,
                        help="simulated seconds per real second on duty (docked: 1)")
    parser.add_argument("--heapsize", default="256k", help="micropython -X heapsize=")
    parser.add_argument("--link", choices=("serial", "mqtt"), default="serial")
    parser.add_argument("--segment-s", type=int, default=60, help="segment length (simulated)")
    parser.add_argument("--bitrate", type=int, default=64_000, help="camera bits per second")
    parser.add_argument("--gc-every", type=int, default=-1,
                        help="bytes allocated between collections (-1: the firmware's own)")
    parser.add_argument("--keep", type=Path, help="work here (vault, logs) and keep it")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    say = (lambda text: None) if args.json else (lambda text: print(text, flush=True))
    say(f"shift: {args.hours:g} h at {args.rate}x, heapsize={args.heapsize}, {args.link} "
        f"dockings, {args.segment_s} s segments at {args.bitrate // 1000} kbit/s")
    with tempfile.TemporaryDirectory(prefix="shift-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        try:
            out = run_shift(work, hours=args.hours, rate=args.rate, heapsize=args.heapsize,
                            link=args.link, segment_s=args.segment_s, bitrate=args.bitrate,
                            gc_every=args.gc_every, progress=say)
        except Exception as exc:  # noqa: BLE001 - one line for the failure, exit 1
            print(f"shift: FAILED: {exc}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    kinds = ", ".join(f"{n} {k}s" for k, n in sorted(out["records_by_kind"].items()))
    print(f"heap:                 {out['heapsize']} ({out['heap_bytes']} bytes for the GC)")
    print(f"live after imports:   {_kb(out['live_after_imports'])} ({out['live_after_imports']} B,"
          f" {out['modules']} modules: bytecode + module state, in flash on a board)")
    print(f"peak in use:          {_kb(out['peak_in_use'])} "
          f"(sampled {out['heap_samples']} times, after a collection; at {out['peak_at']})")
    print(f"data-heap peak:       {_kb(out['data_heap_peak'])} ({out['data_heap_peak']} B; "
          f"at the end: {_kb(out['data_heap_at_end'])}; {_kb(out['heap_free_at_end'])} free, "
          f"the longest free run {_kb(out['largest_free_at_end'])})")
    print(f"allocated:            {out['allocated'] / 1e6:.0f} MB over the shift "
          f"(the collector's work)")
    print(f"records:              {out['records']} ({kinds}); "
          f"{out['recorded_bytes'] / 1e6:.1f} MB of segments")
    print(f"actions:              {out['actions']} ({out['refusals']} refused by the policy)")
    print("events:               " + ", ".join(f"{n} {name}" for name, n in
                                               sorted(out["events"].items())))
    for i, d in enumerate(out["dockings"], 1):
        ready = "ready for duty" if d["ready"] else "not ready: " + "; ".join(d["not_ready"])
        print(f"docking {i}:            records {d['first']}-{d['last']} stored, verified, "
              f"released in {d['seconds']} s; clock stepped {d['clock_step_s']} s; {ready}")
    print(f"wall time:            {out['wall_s']} s for {out['shift_hours']:g} h "
          f"(acceleration {out['acceleration']}x overall, {out['rate']}x on duty)")
    print("vault:                verifies; the recorder holds no record; no MemoryError")
    return 0


if __name__ == "__main__":
    sys.exit(main())
