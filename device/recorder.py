"""The recorder core: what the officer asks for, what the policy allows, and the signed chain.

States: standby (the camera fills a pre-event buffer of the policy's length), recording, and
recording inside a phase (a matter and stage of the annex, with case number and officer id).
While a phase whose row is continuous is active, pause, stop and mute are refused: the
indicator says so and each refusal becomes a signed event. The phase ends only through its
row's end trigger, confirmed by a second deliberate action within a few seconds.

Segments are written to `current.part` (through device/fs.py, like every write), hashed as
they go (read back only to salvage a part after a break), then sealed: the
manifest names the device, sequence, previous record's hash, the segment's SHA-256 and size,
start/end time, clock state, tracks, phase and policy, and is signed on the device. Events
(phase start/end, refusals, notice, warning, bookmarks, battery, policy) are records in the
same chain, so the dock can rebuild every phase. A phase change cuts the segment (after at
least one chunk), so every segment belongs to the one phase that was active when it began.

If recording breaks anyway (power loss, crash, watchdog reset), the next boot seals what was
written as a truncated segment, writes a signed gap record, and resumes a phase that was in
force. Boot recovery is idempotent: a cut during it leaves a state the next boot finishes,
without a second gap for the same break (the gap names the break by when the recorder was
last alive). The phase in force at a cut is the one the newest record shows (an event or a
gap carries the phase in force when it was signed; `phase_ended` ends it), else the one the
recording meta names; the meta exists exactly while recording is on (it is written as soon
as recording is asked for, before the first byte).

A full card is a recorded fact, not a crash: when a write fails with ENOSPC (or another
writer had to take the store's spare room), the recorder seals what the card holds as a
truncated segment, signs a gap record with cause `storage_full`, shows "storage_full", and
waits; once the dock has freed room (releases), it signs `phase_resumed` after that gap and
records the phase again. A gap rather than an event: the recording of a continuous phase
broke, exactly what a gap record states (cause, last record, last alive, batteries, phase),
and the dock's timeline lists it with the phase's findings like a power loss.

The recording loop feeds the board's watchdog (`hal.watchdog`) while it runs, and boot
recovery feeds it per chunk it hashes (the store per entry and chunk it examines); if it hangs
or dies, the watchdog resets the board and the next boot records the gap (cause "watchdog"
when the board tells the reset cause).

Time: the signed timestamps (t, t_start, t_end, t_alive, t_boot) are what the clock said
(`clock.now_us`, which a dock steps); every length and cadence (a segment's `segment_ms`, a
pre-event piece, the "still alive" notes, `pre_event_ms`) is measured on the board's
monotonic tick (`clock.ticks_ms`), so a step of hours mid-recording neither stretches nor cuts
a segment or a piece.
"""

import asyncio
import hashlib
import time

from device import FIRMWARE_VERSION, fs
from device.hal import battery_state
from device.store import file_hash
from protocol import cose, manifest
from protocol.compat import const

CHUNK_SIZE = const(8192)  # camera bytes per write: small, it lives in the heap for good
_CONFIRM_MS = const(10000)  # a phase-end request must be confirmed within this
_ALIVE_MS = const(1000)  # how often the recording meta notes "still alive"
_PRE_CHUNK_MS = const(1000)  # the pre-event buffer is kept in pieces of this length
_IDLE_S = const(1)  # standby wakes this often to feed the watchdog
_ROOM_MS = const(500)  # a full card: how often to look for room
_ROOM_SPARES = const(3)  # ... and how much must be free to record again (in spares)
_STORAGE_FULL = "storage_full"


class Refused(Exception):
    """An action the policy or the recorder's state does not allow; the message says why."""


def _is(fields, kind: str, *events) -> bool:
    if fields is None or fields["kind"] != kind:
        return False
    return not events or fields["event"] in events


class Recorder:
    def __init__(self, hal, store, key, clock, policies, log, buf=None,
                 segment_ms: int = 60000, reset_cause: str = "") -> None:
        self.hal = hal
        self.store = store
        self.key = key
        self.clock = clock
        self.policies = policies
        self.segment_ms = segment_ms
        self.reset_cause = reset_cause  # why the board last reset, if it knows ("watchdog")
        self._log = log
        # One buffer for the recorder's whole life (boot code may allocate it early).
        self._buf = buf if buf is not None else bytearray(CHUNK_SIZE)
        self._wdt = getattr(hal, "watchdog", None)
        self.recording = False
        self._asked = False  # recording was asked for since the last segment began
        self.busy = False  # a segment is open (it may still be sealing after a stop)
        self.muted = False
        self.phase: dict = {}  # {"row", "case", "officer"} while a phase is active
        self._epoch = 0  # bumped by a phase change, mute or stop: the segment ends there
        self._end_pending = False  # a phase end was requested and awaits confirmation
        self._end_deadline = time.ticks_ms()
        self._stop_after = 0  # boot script: stop after this many segments (0: no limit)
        self._battery_warned = False
        self._wake = asyncio.Event()
        # pre-event buffer: [(path, t_start, t_end, size, tick at its start)], oldest first
        self._pre: list = []
        self._pre_n = 0
        self._meta = None  # type: dict | None  # the meta of the segment being recorded
        # A full card: the seq of its storage_full gap while waiting for room; -1 while even
        # that gap could not be written yet; 0 when the card has room.
        self.full = 0
        self._pending = _STORAGE_FULL  # the cause of the gap a full card still owes
        self._room = 0  # bytes free before a full card records again
        self._shown = ""

    def _show(self, state: str) -> None:
        self._shown = state
        self.hal.indicator.show(state)

    def _feed(self) -> None:
        if self._wdt is not None:
            self._wdt.feed()

    # -- signed records ---------------------------------------------------------------------
    def _common(self, kind: str) -> dict:
        return {
            "v": manifest.FORMAT_VERSION,
            "kind": kind,
            "device_id": self.hal.device_id,
            "seq": self.store.head_seq + 1,
            "prev": self.store.head_hash,
            "policy": self.policies.name,
            "fw": FIRMWARE_VERSION,
        }

    def _seal(self, fields: dict, part) -> bytes:
        record = cose.sign1(manifest.encode(fields), self.key.kid, self.key.sign)
        self.store.add(fields["seq"], part, record, fields)
        return record

    def event(self, name: str, detail=None) -> int:
        """Sign an event into the chain now; returns its sequence number."""
        fields = self._common(manifest.KIND_EVENT)
        fields["t"] = self.clock.now_us()
        fields["clock"] = self.clock.describe()
        fields["event"] = name
        fields["detail"] = detail or {}
        fields["phase"] = dict(self.phase)
        self._seal(fields, None)
        self._log("event %d: %s %r" % (fields["seq"], name, fields["detail"]))
        return fields["seq"]

    def _seal_segment(self, sha, size, meta, t_end, truncated) -> int:
        fields = self._common(manifest.KIND_SEGMENT)
        fields["sha256"] = sha
        fields["size"] = size
        fields["t_start"] = meta["t_start"]
        fields["t_end"] = max(t_end, meta["t_start"])
        fields["clock"] = meta["clock"]
        fields["tracks"] = meta["tracks"]
        fields["truncated"] = truncated
        fields["phase"] = meta["phase"]
        fields["pre_event_ms"] = meta["pre_event_ms"]
        self._seal(fields, self.store.part_path)
        self._log("sealed segment %d: %d bytes%s" % (fields["seq"], size,
                                                    " (truncated)" if truncated else ""))
        return fields["seq"]

    def _salvage(self, meta, written: int) -> None:
        """Seal current.part as a truncated segment, hashed from what the card holds. It ends
        now if the card holds all `written` bytes, else when the recorder was last alive."""
        self.store.settle()  # a part that is the newest record's data is not a new segment
        if not self.store.part_exists():
            return
        now = self.clock.now_us()
        if meta is None:  # a part without its meta: nothing says when it started
            meta = {"t_start": now, "t_alive": now, "clock": self.clock.describe(),
                    "phase": {}, "tracks": list(self.hal.camera.tracks), "pre_event_ms": 0,
                    "fault": "unknown"}
        digest, size = file_hash(self.store.part_path, self._buf, self._feed)
        if not size:  # nothing reached the card: the gap record says all there is
            fs.remove(self.store.part_path)
            return
        self._seal_segment(digest, size, meta, now if size == written else meta["t_alive"], True)

    def _gap(self, cause: str, t_last: int, phase) -> int:
        fields = self._common(manifest.KIND_GAP)
        fields["cause"] = cause
        fields["last_seq"] = self.store.head_seq
        fields["t_last"] = t_last
        fields["t_boot"] = self.clock.now_us()
        fields["clock"] = self.clock.describe()
        fields["battery_main"] = battery_state(self.hal.battery_main)
        fields["battery_backup"] = battery_state(self.hal.battery_backup)
        fields["phase"] = dict(phase)
        self._seal(fields, None)
        self._log("gap recorded (%s): recording broke after record %d"
                  % (cause, fields["last_seq"]))
        return fields["seq"]

    # -- boot ---------------------------------------------------------------------------------
    def recover(self) -> None:
        """After a power loss, crash or reset mid-recording: salvage, record the gap, resume
        the phase in force. On a full card what cannot be written waits for room."""
        cause = self.reset_cause or "power_loss"
        try:
            gap, was_recording, waiting = self._recover(cause, -1, None)
            if waiting:
                self.full = gap  # still waiting for room: the run loop resumes once there is
                self.recording = bool(self.phase)
                self._show(_STORAGE_FULL)
            elif self.phase and was_recording:
                # A continuous phase does not end because the power did: record it on.
                self.event("phase_resumed", {"after_gap": gap})
                self._start_recording()
        except OSError as exc:
            if not fs.is_full(exc):
                raise
            self._log("storage full at boot: %s" % exc)
            self._pending = cause
            self.full = -1
            self.recording = bool(self.phase)
            self._show(_STORAGE_FULL)

    def _recover(self, cause: str, written: int, phase) -> tuple:
        """Seal what a broken recording left and sign its gap, once: a cut during this leaves
        a state the next call finishes without a second gap (the gap names the break by when
        the recorder was last alive). `phase`: the phase in force (None: find it from the
        newest record and the meta, as at boot). Returns (the gap's seq or 0, whether
        recording was on, whether that gap is a full card's still waiting for room)."""
        store = self.store
        meta = store.read_meta()
        head = store.head_fields
        part = store.part_exists()
        if phase is None:
            ref = head
            if _is(ref, manifest.KIND_SEGMENT) and ref["truncated"]:  # type: ignore[index]
                ref = store.fields(store.head_seq - 1)  # salvaged by a recovery a cut stopped
            if _is(ref, manifest.KIND_EVENT, "phase_ended"):
                phase = {}
            elif _is(ref, manifest.KIND_EVENT) or _is(ref, manifest.KIND_GAP):
                phase = ref["phase"]  # type: ignore[index]
            elif meta is not None:
                phase = meta.get("active", meta["phase"])
            else:
                phase = {}
            self.phase = dict(phase)
        if meta is not None and meta.get("full"):
            return meta["full"], True, True  # a full card, its gap signed: waiting for room
        # When the recording that broke was last alive (None: nothing broke).
        broke_at = None
        if meta is not None:
            broke_at = meta["t_alive"]
            cause = meta.get("fault") or cause
        elif part:
            broke_at = self.clock.now_us()
        elif _is(head, manifest.KIND_EVENT, "phase_started", "phase_resumed"):
            broke_at = head["t"]  # type: ignore[index]  # cut before its first segment began
        gap, waiting = 0, False
        if _is(head, manifest.KIND_GAP) and not part and (
                broke_at in (None, head["t_last"])  # type: ignore[index]
                or head["cause"] == _STORAGE_FULL):  # type: ignore[index]
            gap, broke_at = head["seq"], None  # type: ignore[index]  # signed before the cut
            waiting = head["cause"] == _STORAGE_FULL  # type: ignore[index]
        was_recording = broke_at is not None or gap != 0
        if part:
            before = store.head_seq
            self._salvage(meta, written)
            if written >= 0 and store.head_seq != before:
                broke_at = store.head_fields["t_end"]  # type: ignore[index]
        if broke_at is not None:
            gap = self._gap(cause, broke_at, phase)
            waiting = cause == _STORAGE_FULL
        if meta is not None:
            store.clear_meta()
        return gap, was_recording, waiting

    # -- what the officer asks for ------------------------------------------------------------
    def handle(self, action: str, args) -> str:
        """Carry out a UI action; returns what the indicator says, raises Refused."""
        if self.full and self.hal.storage.usage()[0] < self.store.spare_size() // 2:
            # The last room on a full card is for the dock's receipts, which free it.
            raise Refused("%s: the card is full; its last room is kept for the dock" % action)
        if action == "record":
            return self._record()
        if action in ("stop", "pause", "mute"):
            return self._interrupt(action)
        if action == "unmute":
            self.muted = False
            self._epoch += 1
            self.event("unmuted")
            return "recording"
        if action == "phase_start":
            return self._phase_start(args)
        if action == "end_request":
            return self._end_request(" ".join(args))
        if action == "end_confirm":
            return self._end_confirm()
        if action in ("notice", "warning", "bookmark"):
            # Art. 7 notice to the party; Art. 5(6) warning to an uncooperative party.
            name = {"notice": "notice_given", "warning": "warning_given"}.get(action, action)
            self.event(name, {"note": " ".join(args)} if args else {})
            return "ok"
        raise Refused("unknown action %r" % action)

    def _refuse(self, action: str, reason: str) -> None:
        self._show("refused")
        self.event("refused", {"action": action, "reason": reason})
        raise Refused("%s refused: %s" % (action, reason))

    def _record(self) -> str:
        if self.recording:
            return "recording"
        free, _ = self.hal.storage.usage()
        if self.full or free < self.policies.threshold("storage_reserve_mb") * 1048576:
            self._show("storage_low")
            self._refuse("record", "storage below the reserve kept for mandated phases")
        self._start_recording()
        return "recording"

    def _start_recording(self) -> None:
        self.recording = True
        self._asked = True  # even if stopped at once, a segment records what was asked
        self._note_active()
        self._show("recording" if not self.full else _STORAGE_FULL)
        self._wake.set()

    def _note_active(self) -> None:
        """Record durably that recording is on and which phase is in force, before the camera
        loop gets to its first byte (a cut in between must still resume the phase)."""
        if self.full:
            return
        meta = self._meta
        if meta is None:
            now = self.clock.now_us()
            meta = {"t_start": now, "t_alive": now, "clock": self.clock.describe(),
                    "phase": dict(self.phase), "tracks": list(self.hal.camera.tracks),
                    "pre_event_ms": 0}
        meta["active"] = dict(self.phase)
        self.store.write_meta(meta)

    def _interrupt(self, action: str) -> str:
        row = self.policies.row(self.phase["row"]) if self.phase else None
        if row is not None and row["continuous"]:
            self._refuse(action, "row %d (%s, %s) is recorded without interruption until %s"
                         % (row["no"], row["matter"], row["stage"], row["end"]))
        if action == "mute":
            self.muted = True
            self._epoch += 1
            self.event("muted")
            return "recording"
        if self.recording:
            self.recording = False  # the camera loop seals the segment, then shows idle
            self._epoch += 1
            self.event("recording_stopped", {"action": action})
            if not self.busy:
                self.store.clear_meta()
        elif not self.busy:
            self._show("idle")
        return "idle"

    def _phase_start(self, args) -> str:
        if self.phase:
            self._refuse("phase_start", "phase row %d is still active" % self.phase["row"])
        if len(args) < 3:
            raise Refused("phase_start needs: row case-number officer-id")
        try:
            no = int(args[0])
        except ValueError:
            raise Refused("phase row must be a number, not %r" % args[0])
        row = self.policies.row(no)
        if row is None or row["recorder"] != "recorder":
            raise Refused("row %s is not a body-worn recorder row of policy %s"
                          % (args[0], self.policies.name))
        pct = self.hal.battery_main.read()[1]
        floor = self.policies.threshold("main_floor_pct")
        if pct < floor:
            # Refusing to record an enforcement action would be worse than recording it on a
            # weak battery: the phase starts, and the override is on the record.
            self._show("battery_low")
            self.event("low_battery_override", {"pct": pct, "floor": floor})
        self.phase = {"row": no, "case": args[1], "officer": args[2]}
        self._epoch += 1
        self.event("phase_started", {"matter": row["matter"], "stage": row["stage"],
                                     "start": row["start"], "end": row["end"]})
        self._start_recording()
        return "phase"

    def _end_request(self, trigger: str) -> str:
        if not self.phase:
            raise Refused("no phase is active")
        row = self.policies.row(self.phase["row"])
        if row is not None and trigger != row["end"]:
            self._refuse("end", "row %d ends at %r, not %r" % (row["no"], row["end"], trigger))
        self._end_pending = True
        self._end_deadline = time.ticks_add(time.ticks_ms(), _CONFIRM_MS)
        self._show("confirm_end")
        return "confirm_end"

    def _end_confirm(self) -> str:
        pending, self._end_pending = self._end_pending, False
        if not self.phase or not pending or time.ticks_diff(self._end_deadline,
                                                             time.ticks_ms()) < 0:
            raise Refused("no phase end to confirm (request it first, then confirm within %d s)"
                          % (_CONFIRM_MS // 1000))
        row = self.policies.row(self.phase["row"])
        self.event("phase_ended", {"end": row["end"] if row else ""})
        self.phase = {}
        self._epoch += 1
        if self.recording:
            self._note_active()
        self._show("recording")
        return "recording"

    # -- the camera loop ----------------------------------------------------------------------
    async def record_segments(self, count: int) -> None:
        """Boot script for demos and tests: record `count` segments, then stop."""
        self._stop_after = count
        self._start_recording()
        while self.recording:
            await asyncio.sleep_ms(20)

    async def run(self) -> None:
        try:
            while True:
                await self.step()
        except Exception as exc:  # the watchdog resets the board: say why first
            self._log("recording task failed: %r" % (exc,))
            raise

    async def step(self) -> None:
        """One turn of the camera loop: a segment, a pre-event piece, a look for room on a
        full card, or a second of standby."""
        self._feed()
        if self.full:
            await self._wait_for_room()
        elif self.recording or self._asked:
            if self.store.ensure_spare():
                await self._record_segment()
            else:
                self._storage_full(0)  # no room to record into
        elif self.policies.threshold("pre_event_s"):
            await self._pre_event_piece()
        else:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), _IDLE_S)
            except asyncio.TimeoutError:  # noqa: UP041 - MicroPython's is asyncio's own
                pass

    # -- a full card --------------------------------------------------------------------------
    def _storage_full(self, written: int) -> None:
        """The card is full: seal what it holds, sign the gap, wait for the dock to free room."""
        self._meta = None
        self.store.free_spare()  # its room is for the records below and the dock's receipts
        self._show(_STORAGE_FULL)
        self._log("storage full")
        self._pending = _STORAGE_FULL
        self.full = -1
        # Record again once the segment that did not fit fits twice (littlefs gives back what
        # it had not committed, which must not look like room).
        self._room = max(_ROOM_SPARES * self.store.spare_size(),
                         self.store.spare_size() + 2 * written)
        self._seal_full(written)
        if not self.phase:
            self.recording = False  # outside a phase a full card ends the recording

    def _seal_full(self, written: int) -> None:
        """Write what a full card owes (the truncated segment, the gap), if it fits now, and
        note that the recorder waits for room (the meta says so across a reboot: events signed
        meanwhile are newer than the gap)."""
        try:
            gap, _, _ = self._recover(self._pending, written, self.phase)
            if not gap:
                gap = self._gap(self._pending, self.clock.now_us(), self.phase)
            now = self.clock.now_us()
            self.store.write_meta({"t_start": now, "t_alive": now, "full": gap,
                                   "phase": dict(self.phase), "active": dict(self.phase)})
        except OSError as exc:
            if not fs.is_full(exc):
                raise
            return  # not even that fits: tried again as room appears
        self.full = gap

    async def _wait_for_room(self) -> None:
        await asyncio.sleep_ms(_ROOM_MS)
        store = self.store
        if self.full < 0:  # the gap itself is still to be written
            self._seal_full(-1)
            if self.full < 0:
                return
        free = self.hal.storage.usage()[0]
        if free < max(self._room, _ROOM_SPARES * store.spare_size()) or not store.ensure_spare():
            if self._shown != _STORAGE_FULL:
                self._show(_STORAGE_FULL)
            return
        gap, self.full = self.full, 0
        if self.phase:
            self._log("room on the card again: recording resumes")
            self.event("phase_resumed", {"after_gap": gap})
            self._start_recording()
        else:
            self.store.clear_meta()
            self._show("idle")

    # -- recording ----------------------------------------------------------------------------
    async def _pre_event_piece(self) -> None:
        # Standby: keep the last pre_event_s seconds in a ring of files on the card.
        keep = (self.policies.threshold("pre_event_s") * 1000 + _PRE_CHUNK_MS - 1) // _PRE_CHUNK_MS
        path = "%s/pre%d.bin" % (self.store.dir, self._pre_n % (keep + 1))
        self._pre_n += 1
        self._pre = [p for p in self._pre if p[0] != path]
        camera = self.hal.camera
        clock = self.clock
        mv = memoryview(self._buf)
        t_start = clock.now_us()
        tick0 = clock.ticks_ms()
        size = 0
        camera.start()
        try:
            f = fs.create(path)
            try:
                while (not self._asked
                       and time.ticks_diff(clock.ticks_ms(), tick0) < _PRE_CHUNK_MS):
                    n = await camera.read_into(self._buf)
                    fs.write(f, mv[:n])
                    size += n
                    self._feed()
            finally:
                f.close()
        except OSError as exc:
            if not fs.is_full(exc):
                raise
            # No room for the pre-event ring: drop it (standby records nothing else).
            self._drop_pre()
            fs.remove(path)
            await asyncio.sleep_ms(_ROOM_MS)
            return
        finally:
            camera.stop()
        self._pre.append((path, t_start, clock.now_us(), size, tick0))
        self._pre = self._pre[-keep:]

    def _drop_pre(self) -> None:
        for piece in self._pre:
            fs.remove(piece[0])
        self._pre = []

    def _take_pre_event(self, f, digest) -> tuple:
        """Move the pre-event buffer into the new segment; returns (its start on the clock,
        its start tick, its bytes); (0, 0, 0) when there is none."""
        t_first, tick_first, total = 0, 0, 0
        mv = memoryview(self._buf)
        for path, t0, _t1, _size, tick0 in self._pre:
            with open(path, "rb") as src:
                while True:
                    n = src.readinto(self._buf)
                    if not n:
                        break
                    digest.update(mv[:n])
                    fs.write(f, mv[:n])
                    total += n
            if not t_first:
                t_first, tick_first = t0, tick0
        self._drop_pre()
        return t_first, tick_first, total

    async def _record_segment(self) -> None:
        self.busy = True
        try:
            await self._record_one()
        finally:
            self.busy = False
            self._meta = None
        if not self.recording and not self.full:
            self.store.clear_meta()
            self._show("idle")

    async def _record_one(self) -> None:
        store = self.store
        camera = self.hal.camera
        clock = self.clock
        mv = memoryview(self._buf)
        digest = hashlib.sha256()
        now = clock.now_us()
        tick0 = clock.ticks_ms()  # the segment's length and the alive notes run on ticks
        meta = {"t_start": now, "clock": clock.describe(), "phase": dict(self.phase),
                "tracks": ["video"] if self.muted else list(camera.tracks), "pre_event_ms": 0,
                "t_alive": now, "active": dict(self.phase)}
        epoch = self._epoch
        self._asked = False
        size = 0
        full = False
        store.write_meta(meta)  # before the part exists: a part is never orphaned
        self._meta = meta
        f = fs.create(store.part_path)
        try:
            t_pre, tick_pre, size = self._take_pre_event(f, digest)
            if t_pre:
                # The start is what the clock said when the buffer's first piece began; how
                # long before this segment that was is a length, on ticks.
                meta["t_start"] = t_pre
                meta["pre_event_ms"] = max(0, time.ticks_diff(tick0, tick_pre))
                store.write_meta(meta)
            camera.start()
            alive = tick0
            while True:
                n = await camera.read_into(self._buf)
                chunk = mv[:n]
                fs.write(f, chunk)
                digest.update(chunk)
                size += n
                self._feed()
                if not store.spare_ok:
                    full = True  # a write elsewhere found the card full and took the spare
                    break
                tick = clock.ticks_ms()
                if (self._epoch != epoch or not self.recording
                        or time.ticks_diff(tick, tick0) >= self.segment_ms):
                    break
                if time.ticks_diff(tick, alive) >= _ALIVE_MS:
                    fs.flush(f)
                    meta["t_alive"] = clock.now_us()  # evidence: what the clock said
                    store.write_meta(meta)
                    alive = tick
        except OSError as exc:
            if not fs.is_full(exc):
                raise
            full = True
        finally:
            camera.stop()
            try:
                f.close()
            except OSError as exc:  # a full card may refuse to commit the last bytes
                if not fs.is_full(exc):
                    raise
                full = True
        if not full:
            try:
                self._seal_segment(digest.digest(), size, meta, clock.now_us(), False)
            except OSError as exc:
                if not fs.is_full(exc):
                    raise
                full = True
        if full:
            self._storage_full(size)
            return
        self._checkbattery_state()
        if self._stop_after:
            self._stop_after -= 1
            if not self._stop_after:
                self.recording = False

    def _checkbattery_state(self) -> None:
        pct = self.hal.battery_main.read()[1]
        if pct < self.policies.threshold("main_floor_pct"):
            if not self._battery_warned:
                self._battery_warned = True
                self._show("battery_low")
                self.event("battery_low", {"pct": pct})
        else:
            self._battery_warned = False
