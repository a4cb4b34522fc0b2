"""The recorder core: what the officer asks for, what the policy allows, and the signed chain.

States: standby (the camera fills a pre-event buffer of the policy's length), recording, and
recording inside a phase (a matter and stage of the annex, with case number and officer id).
While a phase whose row is continuous is active, pause, stop and mute are refused: the
indicator says so and each refusal becomes a signed event. The phase ends only through its
row's end trigger, confirmed by a second deliberate action within a few seconds.

Segments are written to `current.part`, hashed as they go (never read back), then sealed: the
manifest names the device, sequence, previous record's hash, the segment's SHA-256 and size,
start/end time, clock state, tracks, phase and policy, and is signed on the device. Events
(phase start/end, refusals, notice, warning, bookmarks, battery, policy) are records in the
same chain, so the dock can rebuild every phase. A phase change cuts the segment (after at
least one chunk), so every segment belongs to the one phase that was active when it began.

If recording breaks anyway (power loss, crash), the next boot seals what was written as a
truncated segment, writes a signed gap record, and resumes a phase that was active.
"""

import asyncio
import hashlib
import os
import time

from device import FIRMWARE_VERSION
from device.hal import battery_state
from protocol import cose, manifest
from protocol.compat import const

CHUNK_SIZE = const(8192)  # camera bytes per write: small, it lives in the heap for good
_CONFIRM_MS = const(10000)  # a phase-end request must be confirmed within this
_ALIVE_MS = const(1000)  # how often the recording meta notes "still alive"
_PRE_CHUNK_MS = const(1000)  # the pre-event buffer is kept in pieces of this length


class Refused(Exception):
    """An action the policy or the recorder's state does not allow; the message says why."""


class Recorder:
    def __init__(self, hal, store, key, clock, policies, log, buf=None,
                 segment_ms: int = 60000) -> None:
        self.hal = hal
        self.store = store
        self.key = key
        self.clock = clock
        self.policies = policies
        self.segment_ms = segment_ms
        self._log = log
        # One buffer for the recorder's whole life (boot code may allocate it early).
        self._buf = buf if buf is not None else bytearray(CHUNK_SIZE)
        self.recording = False
        self.busy = False  # a segment is open (it may still be sealing after a stop)
        self.muted = False
        self.phase: dict = {}  # {"row", "case", "officer"} while a phase is active
        self._epoch = 0  # bumped by a phase change, mute or stop: the segment ends there
        self._end_pending = False  # a phase end was requested and awaits confirmation
        self._end_deadline = time.ticks_ms()
        self._stop_after = 0  # boot script: stop after this many segments (0: no limit)
        self._battery_warned = False
        self._wake = asyncio.Event()
        self._pre: list = []  # pre-event buffer: [(path, t_start, t_end, size)], oldest first
        self._pre_n = 0

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
        self.store.add(fields["seq"], part, record)
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

    # -- boot ---------------------------------------------------------------------------------
    def recover(self) -> None:
        """After a power loss or crash mid-recording: salvage, record the gap, resume a phase."""
        meta = self.store.read_meta()
        if meta is None:
            if not self.store.part_exists():
                return
            # A part without its meta: nothing says when it started; salvage it all the same.
            now = self.clock.now_us()
            meta = {"t_start": now, "t_alive": now, "clock": self.clock.describe(), "phase": {},
                    "tracks": list(self.hal.camera.tracks), "pre_event_ms": 0,
                    "fault": "unknown"}
        last_alive = meta["t_alive"]
        if self.store.part_exists():
            digest = hashlib.sha256()
            size = 0
            mv = memoryview(self._buf)
            with open(self.store.part_path, "rb") as f:
                while True:
                    n = f.readinto(self._buf)
                    if not n:
                        break
                    digest.update(mv[:n])
                    size += n
            self._seal_segment(digest.digest(), size, meta, last_alive, True)
        fields = self._common(manifest.KIND_GAP)
        fields["cause"] = meta.get("fault") or "power_loss"
        fields["last_seq"] = self.store.head_seq
        fields["t_last"] = last_alive
        fields["t_boot"] = self.clock.now_us()
        fields["clock"] = self.clock.describe()
        fields["battery_main"] = battery_state(self.hal.battery_main)
        fields["battery_backup"] = battery_state(self.hal.battery_backup)
        fields["phase"] = meta["phase"]
        self._seal(fields, None)
        self.store.clear_meta()
        self._log("gap recorded: recording broke after record %d" % fields["last_seq"])
        if meta["phase"]:
            # A continuous phase does not end because the power did: carry on recording it.
            self.phase = meta["phase"]
            self.event("phase_resumed", {"after_gap": fields["seq"]})
            self._start_recording()

    # -- what the officer asks for ------------------------------------------------------------
    def handle(self, action: str, args) -> str:
        """Carry out a UI action; returns what the indicator says, raises Refused."""
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
        self.hal.indicator.show("refused")
        self.event("refused", {"action": action, "reason": reason})
        raise Refused("%s refused: %s" % (action, reason))

    def _record(self) -> str:
        if self.recording:
            return "recording"
        free, _ = self.hal.storage.usage()
        if free < self.policies.threshold("storage_reserve_mb") * 1048576:
            self.hal.indicator.show("storage_low")
            self._refuse("record", "storage below the reserve kept for mandated phases")
        self._start_recording()
        return "recording"

    def _start_recording(self) -> None:
        self.recording = True
        self.hal.indicator.show("recording")
        self._wake.set()

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
        elif not self.busy:
            self.hal.indicator.show("idle")
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
            self.hal.indicator.show("battery_low")
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
        self.hal.indicator.show("confirm_end")
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
        self.hal.indicator.show("recording")
        return "recording"

    # -- the camera loop ----------------------------------------------------------------------
    async def record_segments(self, count: int) -> None:
        """Boot script for demos and tests: record `count` segments, then stop."""
        self._stop_after = count
        self._start_recording()
        while self.recording:
            await asyncio.sleep_ms(20)

    async def run(self) -> None:
        while True:
            if self.recording:
                await self._record_segment()
            elif self.policies.threshold("pre_event_s"):
                await self._pre_event_piece()
            else:
                self._wake.clear()
                await self._wake.wait()

    async def _pre_event_piece(self) -> None:
        # Standby: keep the last pre_event_s seconds in a ring of files on the card.
        keep = (self.policies.threshold("pre_event_s") * 1000 + _PRE_CHUNK_MS - 1) // _PRE_CHUNK_MS
        path = "%s/pre%d.bin" % (self.store.dir, self._pre_n % (keep + 1))
        self._pre_n += 1
        self._pre = [p for p in self._pre if p[0] != path]
        camera = self.hal.camera
        mv = memoryview(self._buf)
        t_start = self.clock.now_us()
        t_stop = t_start + _PRE_CHUNK_MS * 1000
        size = 0
        camera.start()
        with open(path, "wb") as f:
            while not self.recording and self.clock.now_us() < t_stop:
                n = await camera.read_into(self._buf)
                f.write(mv[:n])
                size += n
        camera.stop()
        self._pre.append((path, t_start, self.clock.now_us(), size))
        self._pre = self._pre[-keep:]

    def _take_pre_event(self, f, digest) -> tuple:
        """Move the pre-event buffer into the new segment; returns (its start, its bytes)."""
        t_first, total = 0, 0
        mv = memoryview(self._buf)
        for path, t0, _t1, _size in self._pre:
            with open(path, "rb") as src:
                while True:
                    n = src.readinto(self._buf)
                    if not n:
                        break
                    digest.update(mv[:n])
                    f.write(mv[:n])
                    total += n
            t_first = t_first or t0
        for path, _t0, _t1, _size in self._pre:
            try:
                os.remove(path)
            except OSError:
                pass
        self._pre = []
        return t_first, total

    async def _record_segment(self) -> None:
        self.busy = True
        try:
            await self._record_one()
        finally:
            self.busy = False
        if not self.recording:
            self.store.clear_meta()
            self.hal.indicator.show("idle")

    async def _record_one(self) -> None:
        camera = self.hal.camera
        mv = memoryview(self._buf)
        digest = hashlib.sha256()
        now = self.clock.now_us()
        meta = {"t_start": now, "clock": self.clock.describe(), "phase": dict(self.phase),
                "tracks": ["video"] if self.muted else list(camera.tracks), "pre_event_ms": 0,
                "t_alive": now}
        epoch = self._epoch
        self.store.write_meta(meta)  # before the part exists: a part is never orphaned
        with open(self.store.part_path, "wb") as f:
            t_pre, size = self._take_pre_event(f, digest)
            if t_pre:
                meta["t_start"] = t_pre
                meta["pre_event_ms"] = (now - t_pre) // 1000
                self.store.write_meta(meta)
            t_stop = now + self.segment_ms * 1000
            alive_at = now + _ALIVE_MS * 1000
            camera.start()
            while True:
                n = await camera.read_into(self._buf)
                chunk = mv[:n]
                digest.update(chunk)
                f.write(chunk)
                size += n
                now = self.clock.now_us()
                if self._epoch != epoch or now >= t_stop:
                    break
                if now >= alive_at:
                    f.flush()
                    meta["t_alive"] = now
                    self.store.write_meta(meta)
                    alive_at = now + _ALIVE_MS * 1000
            camera.stop()
        self._seal_segment(digest.digest(), size, meta, self.clock.now_us(), False)
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
                self.hal.indicator.show("battery_low")
                self.event("battery_low", {"pct": pct})
        else:
            self._battery_warned = False
