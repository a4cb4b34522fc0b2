"""A dock steps the recorder's clock by hours mid-recording; lengths do not move with it.

    micropython -X heapsize=8m tests/mpy/check_clock_step.py STORAGE_DIR

The unix board's simulated parts (device/boards/unix_sim/hal.py: SimTime run RATE times fast,
SimClock, SimCamera) and a recorder booted by device/app.py on a host directory, with a
2 s pre-event buffer (pieces of 1 s) and 2 s segments; the camera makes one 8 KiB chunk per
100 ms of simulated time. The clock is stepped as a dock steps it (ClockService.adjust) at
fixed chunks of the camera's runs (each pre-event piece and each segment is one run):

    run 0  a pre-event piece, untouched
    run 1  a piece, the clock stepped back 4 h at its 4th chunk
    run 2  a piece, stepped forward 4 h at its 4th chunk
    run 3  a piece, stepped back 2 h at its 3rd chunk; "record" pressed at its 6th
    run 4  segment 1 (with the pre-event buffer), stepped back 4 h at its 7th chunk
    run 5  segment 2, stepped forward 4 h at its 7th chunk
    run 6  segment 3, untouched; recording stops after it

Checks: every whole piece is 1 s of chunks (8 to 11) and every segment 2 s (18 to 21); each
segment's size is its pre-event bytes plus its own chunks; segment 1's `pre_event_ms` is the
pre-event buffer's length on ticks (piece 2 and 6 chunks of piece 3); the "still alive" note
is written once in each segment, near its 10th chunk, whatever the step, and holds what the
clock said (after a step back: earlier than the segment's start); the signed t_start and
t_end are wall-clock (segment 2 spans the 4 h step forward). A run longer than 40 chunks
(a length that follows the clock: a step back of hours) is cut by the script, so a firmware
that times lengths on the clock fails here instead of hanging.

Prints "ok <name>" per check, "FIGURES ..." and "ALL OK"; exits 1 on the first failure.
"""

import asyncio
import sys

sys.path.append("tests/mpy")
from cards import log, ok  # noqa: E402

from device import app  # noqa: E402
from device.boards.unix_sim.hal import (
    SimBattery,
    SimCamera,
    SimClock,
    SimIndicator,
    SimStorage,
    SimTime,
)
from device.hal import Hal

RATE = 4  # simulated time runs 4 times fast: a chunk every 25 ms of real time
CHUNK = 8192  # device/recorder.py CHUNK_SIZE
CHUNK_MS = 100  # simulated ms per chunk
BITRATE = CHUNK * 8 * 1000 // CHUNK_MS
PRE_EVENT_S = 2
SEGMENT_MS = 2000
HOUR_US = 3600 * 1000000
CAP = 40  # chunks: a run this long is cut (a length that followed the clock)
SKEW_US = -7 * 86400 * 1000000  # a week behind: wall-clock times far from the host's

ROOT = sys.argv[1] if len(sys.argv) > 1 else "/tmp/check_clock_step"


class StepCamera(SimCamera):
    """SimCamera that counts its chunks per run (start() to stop()) and runs the script's
    actions at given chunks."""

    def __init__(self, bitrate, sim):
        super().__init__(bitrate, sim)
        self.runs = []  # chunks read in each run
        self.actions = {}  # (run, chunk) -> callable
        self.cap = None  # called when a run reaches CAP chunks
        self.running = False

    def start(self):
        super().start()
        self.runs.append(0)
        self.running = True

    def stop(self):
        super().stop()
        self.running = False

    async def read_into(self, buf):
        n = await super().read_into(buf)
        run = len(self.runs) - 1
        self.runs[run] += 1
        action = self.actions.pop((run, self.runs[run]), None)
        if action is not None:
            action()
        if self.runs[run] == CAP and self.cap is not None:
            self.cap()
        return n


def main():
    sim = SimTime(RATE)
    clock = SimClock(SKEW_US, 0, sim)
    camera = StepCamera(BITRATE, sim)
    hal = Hal(device_id="SIM-CLOCKSTEP", clock=clock,
              battery_main=SimBattery(4200, 3300, 95, True, sim=sim),
              battery_backup=SimBattery(3000, 2000, 90, sim=sim),
              storage=SimStorage(ROOT, 64 * 1024 * 1048576), camera=camera,
              indicator=SimIndicator(log), link=None, selftest=lambda: [])
    key = app.load_key(ROOT, log)
    rec = app.boot(hal, key, log, root=ROOT, pre_event_s=PRE_EVENT_S, segment_ms=SEGMENT_MS)
    rec.policies.current["thresholds"]["storage_reserve_mb"] = 0

    steps = []  # (run, chunk, before, after) as ClockService.adjust reports them

    def step(hours):
        def go():
            run = len(camera.runs) - 1
            before, after = rec.clock.adjust(hours * HOUR_US, 1000)
            steps.append((run, camera.runs[run], before, after))
        return go

    def record():
        rec.handle("record", [])
        rec._stop_after = 3  # three segments, then stop (as a boot script does)

    def cut():
        # A run that followed the clock: end it so the checks below report it.
        rec.handle("stop" if rec.recording else "record", [])

    camera.actions = {(1, 4): step(-4), (2, 4): step(4), (3, 3): step(-2), (3, 6): record,
                      (4, 7): step(-4), (5, 7): step(4)}
    camera.cap = cut

    pieces = []  # (path, t_start, t_end, size, ...) of each pre-event piece, in order
    piece = rec._pre_event_piece

    async def watched_piece():
        await piece()
        if rec._pre:
            pieces.append(rec._pre[-1])

    rec._pre_event_piece = watched_piece

    metas = []  # (run, chunk, meta) of each recording meta written while the camera runs
    write_meta = rec.store.write_meta

    def watched_meta(meta):
        if camera.running:
            run = len(camera.runs) - 1
            metas.append((run, camera.runs[run], dict(meta)))
        write_meta(meta)

    rec.store.write_meta = watched_meta

    async def drive():
        task = asyncio.create_task(rec.run())
        for _ in range(3000):  # 60 s of real time at most
            await asyncio.sleep_ms(20)
            if len(camera.runs) > 7 or (len(camera.runs) > 4 and not rec.recording
                                        and not rec.busy):
                break
        task.cancel()

    asyncio.run(drive())
    runs = camera.runs
    print("FIGURES runs=%s steps=%s pieces=%s" % (
        runs, [(s[0], s[1], (s[3] - s[2]) // HOUR_US) for s in steps],
        [p[3] for p in pieces[:4]]))

    # -- the pre-event pieces -------------------------------------------------------------------
    for i in range(3):
        ok("piece %d is 1 s of chunks (%d)" % (i, runs[i]), 8 <= runs[i] <= 11, runs)
    ok("four pre-event pieces before the recording", len(runs) >= 5 and len(pieces) >= 4,
       (runs, len(pieces)))
    for i in range(3):
        ok("piece %d holds its chunks (%d bytes)" % (i, pieces[i][3]),
           pieces[i][3] == runs[i] * CHUNK, (runs, pieces[i][3]))
    ok("piece 3 ends at the record press", runs[3] == 6 and pieces[3][3] == 6 * CHUNK, runs)
    ok("the clock was stepped where the script says", [s[:2] for s in steps][:3]
       == [(1, 4), (2, 4), (3, 3)], steps)
    ok("a piece's times are what the clock said (piece 1 ends 4 h before it starts)",
       pieces[1][2] < pieces[1][1] - 3 * HOUR_US, pieces[1][1:3])

    # -- the segments ---------------------------------------------------------------------------
    store = rec.store
    segs = [f for f in (store.fields(s) for s in store.pending())
            if f is not None and f["kind"] == "segment"]
    ok("three segments sealed", len(segs) == 3 and len(runs) >= 7, (len(segs), runs))
    for i in range(3):
        ok("segment %d is 2 s of chunks (%d)" % (i + 1, runs[4 + i]), 18 <= runs[4 + i] <= 21,
           runs)
        ok("segment %d is not truncated" % (i + 1), not segs[i]["truncated"])
    pre_bytes = (runs[2] + runs[3]) * CHUNK  # the ring keeps the last two pieces
    ok("segment 1 holds its pre-event bytes and its own chunks",
       segs[0]["size"] == pre_bytes + runs[4] * CHUNK, (segs[0]["size"], pre_bytes, runs))
    pre_ms = segs[0]["pre_event_ms"]
    ok("segment 1's pre_event_ms (%d) is the buffer's length on ticks" % pre_ms,
       (runs[2] + runs[3]) * CHUNK_MS - 50 <= pre_ms <= (runs[2] + runs[3] + 2) * CHUNK_MS,
       pre_ms)
    for i in (1, 2):
        ok("segment %d holds its own chunks" % (i + 1),
           segs[i]["size"] == runs[4 + i] * CHUNK and segs[i]["pre_event_ms"] == 0, segs[i])
    ok("segment 1 starts when the clock said the buffer began", segs[0]["t_start"]
       == pieces[2][1], (segs[0]["t_start"], pieces[2][1]))
    span2 = segs[1]["t_end"] - segs[1]["t_start"]
    ok("segment 2's signed times span the 4 h step forward (%d s)" % (span2 // 1000000),
       4 * HOUR_US < span2 < 4 * HOUR_US + 5 * SEGMENT_MS * 1000, span2)
    span3 = segs[2]["t_end"] - segs[2]["t_start"]
    ok("segment 3's signed times span its 2 s", SEGMENT_MS * 1000 - 1000 <= span3
       < 2 * SEGMENT_MS * 1000, span3)

    # -- the "still alive" notes ----------------------------------------------------------------
    for i in range(3):
        run = 4 + i
        alive = [(c, m) for r, c, m in metas if r == run]
        ok("segment %d notes it is alive once, near 1 s (chunks %s)" % (
            i + 1, [c for c, _ in alive]), len(alive) == 1 and 9 <= alive[0][0] <= 12, alive)
        if i == 0:
            ok("after the step back the note holds what the clock said",
               alive[0][1]["t_alive"] < segs[0]["t_start"], alive[0][1])
    print("ALL OK")


main()
