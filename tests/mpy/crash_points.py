"""Every crash point of the recorder's writes, inside MicroPython, on the file systems boards use.

    micropython -X heapsize=64m tests/mpy/crash_points.py lfs2|fat|posix [options]

A scenario (first boot with key generation and commissioning, a clock step, the pre-event
ring, a casual recording with mute, a continuous phase with events inside its segments, a
policy adoption, releases with receipts until every record is released, an event after that)
runs once on a fresh card:

- lfs2, fat: littlefs v2 / FAT on a block device in RAM. Every block write is logged; the
  card as a power cut at write N leaves it is the fresh card with writes 1..N applied (all
  later writes dropped). `--rerun K` re-runs the scenario from scratch for K sampled N with a
  device that refuses every write after the N-th, and checks that card holds the same files
  as the replayed one (so replaying the log is running to N).
- posix: a host directory (VfsPosix). At each file operation (device/fs.py's hook: create,
  write, flush, rename, remove, mkdir, sync) the directory as it is before that operation is
  copied aside and checked.

For each crash point the frozen card is mounted afresh and the recorder rebooted on it through
device/app.py's boot (recovery included), then checked:
- every record durable before the crash (its `store.add` returned) is on the card byte for
  byte, or was released with its receipt kept (lost otherwise);
- the chain verifies from the first record (GENESIS) through records on the card and released
  ones, without a hole; the head was not reset;
- after recovery at most one gap record and one truncated segment are new, every new record's
  signature verifies, every segment's data matches its signed size and hash (quarantined
  otherwise), nothing in rec/ is left that is not a record, its data or the running part;
- a phase in force at the crash (per the surviving records) is in force and recording again;
- every receipt kept parses and names a released record;
- the recorder goes on: it records a segment (ending the phase) or signs an event, and every
  record is released; then, on FAT, no cluster belongs to two files and no file points into
  free clusters (a FAT checker reads the image itself).

Prints "PROBLEM n=<point> ..." for each finding and a last line
    RESULT fs=lfs2 points=… checked=… lost=0 quarantined=0 problems=0 leaked_clusters=… seconds=…
`--dump DIR --every K` writes every K-th crashed card (before its reboot) to DIR for dockings
(tests/hil/test_crash_points.py, tools/crash_points.py), with what each must yield.
"""

import gc
import hashlib
import json
import os
import struct
import sys
import time

import vfs

from device import app, fs
from device import keystore as keystore_module
from device import policy_store as policy_store_module
from device.boards.unix_sim.main import _device_id
from device.hal import Hal
from device.recorder import Refused
from protocol import cose, manifest, policy
from protocol.ed25519 import SigningKey, verify
from protocol.manifest import GENESIS, record_hash

BLOCK = 512
BLOCKS = 256  # a 128 KiB card
CHUNK = 512  # camera bytes per read
CHUNK_US = 250000  # ... covering this much time
SEGMENT_MS = 1500  # six chunks a segment
SPARE = 1024
KEEP = 4  # receipts per generation (the firmware keeps 1024)
DEVICE_ID = "SIM-CRASHPTS"
T_FIRST = 1796000000000000
T_REBOOT = 1797000000000000
_PATTERN = bytes((i * 7 + 3) & 0xFF for i in range(CHUNK))


class PowerCut(Exception):
    pass


# -- the card ------------------------------------------------------------------------------------
class RamDisk:
    """A block device in RAM: logs its writes; with `limit` >= 0 it refuses every write after
    the limit-th (a power cut)."""

    def __init__(self, data) -> None:
        self.data = data
        self.blocks = len(data) // BLOCK
        self.writes = 0
        self.log = None
        self.limit = -1

    def readblocks(self, n, buf, off=0):
        a = n * BLOCK + off
        memoryview(buf)[:] = memoryview(self.data)[a:a + len(buf)]

    def writeblocks(self, n, buf, off=None):
        if self.limit >= 0 and self.writes >= self.limit:
            raise PowerCut()
        self.writes += 1
        a = n * BLOCK + (off or 0)
        self.data[a:a + len(buf)] = buf
        if self.log is not None:
            self.log.append((a, bytes(buf)))

    def ioctl(self, op, arg):
        if op == 4:
            return self.blocks
        if op == 5:
            return BLOCK
        return 0


def make_vfs(kind, bd):
    return vfs.VfsLfs2(bd, mtime=False) if kind == "lfs2" else vfs.VfsFat(bd)


def fresh_card(kind, blocks=BLOCKS):
    bd = RamDisk(bytearray(BLOCK * blocks))
    if kind == "lfs2":
        vfs.VfsLfs2.mkfs(bd)
    else:
        vfs.VfsFat.mkfs(bd)
    bd.writes = 0  # the crash points count from the formatted card
    return bd


def mount(kind, bd, at):
    try:
        vfs.umount(at)
    except OSError:
        pass
    vfs.mount(make_vfs(kind, bd), at)


def rmtree(path):
    try:
        entries = list(os.ilistdir(path))
    except OSError:
        return
    for e in entries:
        p = path + "/" + e[0]
        if e[1] == 0x4000:
            rmtree(p)
        else:
            os.remove(p)
    os.rmdir(path)


def copytree(src, dst):
    os.mkdir(dst)
    for e in os.ilistdir(src):
        s, d = src + "/" + e[0], dst + "/" + e[0]
        if e[1] == 0x4000:
            copytree(s, d)
        else:
            with open(s, "rb") as f:
                data = f.read()
            with open(d, "wb") as f:
                f.write(data)


def tree(path):
    """{relative path: bytes} of every file under `path`."""
    out = {}

    def walk(p, rel):
        for e in os.ilistdir(p):
            if e[1] == 0x4000:
                walk(p + "/" + e[0], rel + e[0] + "/")
            else:
                with open(p + "/" + e[0], "rb") as f:
                    out[rel + e[0]] = f.read()

    walk(path, "")
    return out


def fat_check(image):
    """(problems, lost clusters, garbage entries) of a FAT12/16 image: clusters in two files,
    chains into free or invalid clusters; lost = allocated but in no file (a leak, not a
    fault); garbage = entries that are stale bytes (FatFs links a new directory cluster before
    it zeroes it, so a cut in between leaves old data as entries: skipped, as the store skips
    them)."""
    u16 = lambda o: image[o] | image[o + 1] << 8  # noqa: E731
    bps, spc = u16(11), image[13]
    rsvd, nfats, nroot = u16(14), image[16], u16(17)
    total = u16(19) or struct.unpack_from("<I", image, 32)[0]
    fatsz = u16(22)
    root_at = (rsvd + nfats * fatsz) * bps
    data_sec = rsvd + nfats * fatsz + (nroot * 32 + bps - 1) // bps
    nclus = (total - data_sec) // spc + 2
    fat12 = nclus < 4087
    fat_at = rsvd * bps
    csize = spc * bps

    def entry(n):
        if fat12:
            v = u16(fat_at + n + n // 2)
            return v >> 4 if n & 1 else v & 0xFFF
        return u16(fat_at + 2 * n)

    eoc = 0xFF8 if fat12 else 0xFFF8
    owner = {}
    problems = []

    def chain(first, name):
        out = []
        c = first
        while 2 <= c < nclus:
            if c in owner:
                problems.append("cluster %d in %s and %s" % (c, owner[c], name))
                return out
            owner[c] = name
            out.append(c)
            nxt = entry(c)
            if nxt == 0:
                problems.append("%s: chain runs into free cluster %d" % (name, c))
                return out
            if nxt >= eoc:
                return out
            c = nxt
        if c >= 2:
            problems.append("%s: chain leaves the volume at %d" % (name, c))
        return out

    def walk(offsets, path):
        for off in offsets:
            for i in range(0, csize if path else nroot * 32, 32):
                e = off + i
                first = image[e]
                if first == 0:
                    return
                attr = image[e + 11]
                if first in (0xE5, 0x2E) or attr == 0x0F or attr & 0x08:
                    continue  # deleted, "." / "..", long-name part, volume label
                raw = bytes(image[e:e + 11])
                if not short_name(raw):
                    garbage[0] += 1  # stale bytes in a directory cluster a cut caught growing
                    continue
                name = path + raw.decode().replace(" ", "")
                clus = u16(e + 26)
                if attr & 0x10:
                    walk([data_sec * bps + (c - 2) * csize for c in chain(clus, name)],
                         name + "/")
                elif clus:
                    chain(clus, name)

    garbage = [0]
    walk([root_at], "")
    lost = 0
    for c in range(2, nclus):
        if c not in owner and entry(c) != 0:
            lost += 1
    return problems, lost, garbage[0]


_NAME_OK = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 .~_-"
_SHORT_OK = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ~_-"


def short_name(raw):
    """Could FatFs have written this 8.3 name (upper case) in an entry?"""
    for c in raw:
        if c not in _SHORT_OK:
            return False
    return raw[0] != 0x20


def sfn_like(raw):
    """Could a file system have written this name (not stale data read as an entry)?"""
    for c in raw:
        if c not in _NAME_OK:
            return False
    return True


# -- the recorder's world ----------------------------------------------------------------------
class Clock:
    """The settable clock (`t`, µs) and the monotonic tick beside it (`mono`, µs): both run
    with the camera's chunks (`advance`), a step moves only the clock."""

    def __init__(self, t):
        self.t = t
        self.mono = 0

    def advance(self, us):
        self.t += us
        self.mono += us

    def now_us(self):
        self.advance(1)
        return self.t

    def ticks_ms(self):
        return self.mono // 1000

    def step(self, delta_us):
        self.t += delta_us


class Battery:
    def read(self):
        return 4000, 90, False


class Storage:
    def __init__(self, root):
        self.root = root

    def usage(self):
        st = os.statvfs(self.root)
        return st[4] * st[1], st[2] * st[1]


class Camera:
    tracks = ["audio", "video"]

    def __init__(self, clock):
        self.clock = clock
        self.n = 0
        self.script = {}  # chunk number -> [callable]

    def start(self):
        pass

    def stop(self):
        pass

    def at(self, ahead, fn):
        self.script.setdefault(self.n + ahead, []).append(fn)

    async def read_into(self, buf):
        self.n += 1
        for fn in self.script.pop(self.n, ()):
            fn()
        buf[:CHUNK] = _PATTERN
        struct.pack_into("<I", buf, 0, self.n)
        self.clock.advance(CHUNK_US)
        return CHUNK


class Indicator:
    def __init__(self):
        self.state = "idle"

    def show(self, state):
        self.state = state


def run(coro):
    """Run a coroutine of the recorder to its end: the fake camera never really waits (one
    that sleeps needs a real event loop: asyncio.run)."""
    try:
        while True:
            coro.send(None)
    except StopIteration as done:
        return done.value


def log(text):
    if VERBOSE:
        print("  device:", text)


def seed_rng(n):
    return hashlib.sha256(b"crash-points device key").digest()[:n]


_keys = {}


def cached_signing_key(seed):
    # Building a key's comb table costs ~25 ms; a reboot uses the same key every time.
    k = _keys.get(seed)
    if k is None:
        k = _keys[seed] = SigningKey(seed)
    return k


_verified = {}


def cached_verify(public, msg, sig):
    key = hashlib.sha256(public + msg + sig).digest()
    if key not in _verified:
        _verified[key] = verify(public, msg, sig)
    return _verified[key]


keystore_module.SigningKey = cached_signing_key
policy_store_module.verify = cached_verify
UNHIDDEN = [0]  # files FAT had placed past an end-of-directory mark (fs._unhide)
_unhide = fs._unhide


def counting_unhide(path):
    UNHIDDEN[0] += 1
    _unhide(path)


fs._unhide = counting_unhide


def boot(root, t0, unit_pub, spare=SPARE):
    """What a board's main does at power-on, then device/app.py's boot (with recovery)."""
    clock = Clock(t0)
    camera = Camera(clock)
    device_id = _device_id(root, DEVICE_ID)
    key = keystore_module.DeviceKey.load_or_create(root, log, rng=seed_rng)
    hal = Hal(device_id=device_id, clock=clock, battery_main=Battery(),
              battery_backup=Battery(), storage=Storage(root), camera=camera,
              indicator=Indicator(), link=None, selftest=lambda: [])
    rec = app.boot(hal, key, log, root=root, unit_key=unit_pub, pre_event_s=0,
                   segment_ms=SEGMENT_MS, spare=spare)
    rec.store.keep = KEEP  # rotate the receipts within the scenario
    relax(rec)
    return rec


def relax(rec):
    # A 128 KiB card is below any reserve a policy keeps for phases: not what is tested here.
    rec.policies.current["thresholds"]["storage_reserve_mb"] = 0
    rec.policies.current["thresholds"]["pre_event_s"] = 0


def receipt(seq):
    return b"RCPT" + struct.pack("<I", seq) + bytes((seq + i) & 0xFF for i in range(192))


def press(rec, action, *args):
    try:
        rec.handle(action, list(args))
    except Refused:
        pass


def drive(rec):
    while rec.recording or rec._asked:
        run(rec.step())


def end_phase(rec):
    row = rec.policies.row(rec.phase["row"])
    press(rec, "end_request", *row["end"].split())
    press(rec, "end_confirm")


# -- the scenario --------------------------------------------------------------------------------
class Reference:
    """What the run without a crash did, and when (in writes or operations done)."""

    def __init__(self):
        self.records = {}  # seq -> record bytes
        self.durable = []  # (done, seq): store.add returned
        self.release_start = []  # (done, seq): store.release was called
        self.data = {}  # seq -> segment data of released records


def instrument(rec, ref, done):
    store = rec.store
    add, release = store.add, store.release

    def add_(seq, part, cose_bytes, fields=None):
        add(seq, part, cose_bytes, fields)
        ref.records[seq] = bytes(cose_bytes)
        ref.durable.append((done(), seq))

    def release_(seq, rcpt=b""):
        if store.data_size(seq):
            with store.open_data(seq) as f:
                ref.data[seq] = f.read()
        ref.release_start.append((done(), seq))
        release(seq, rcpt)

    store.add = add_
    store.release = release_


def scenario(root, unit_pub, signed_policy, ref, done):
    rec = boot(root, T_FIRST, unit_pub)
    instrument(rec, ref, done)
    cam = rec.hal.camera
    # The dock steps the clock and signs it.
    before, after = rec.clock.adjust(-2500, 150)
    rec.event("clock_stepped", {"before_us": before, "after_us": after, "delta_us": -2500,
                                "uncertainty_us": 150, "dock": "crash-dock"})
    # Standby keeps a pre-event ring; recording takes it.
    rec.policies.current["thresholds"]["pre_event_s"] = 1
    run(rec._pre_event_piece())
    run(rec._pre_event_piece())
    press(rec, "record")
    rec.policies.current["thresholds"]["pre_event_s"] = 0
    cam.at(8, lambda: press(rec, "mute"))
    cam.at(10, lambda: press(rec, "unmute"))
    cam.at(13, lambda: press(rec, "stop"))
    drive(rec)
    # A continuous phase: events inside segments, a refused pause, the end trigger.
    press(rec, "phase_start", "4", "CASE-1", "4501-0001")
    cam.at(2, lambda: press(rec, "notice", "recorded"))
    cam.at(4, lambda: press(rec, "pause"))
    cam.at(9, lambda: press(rec, "warning"))
    cam.at(11, lambda: end_phase(rec))
    cam.at(12, lambda: press(rec, "stop"))
    drive(rec)
    # The dock delivers a policy; then it takes records 1..6 and frees them.
    name = rec.policies.adopt(signed_policy)
    rec.event("policy_adopted", {"policy": name})
    relax(rec)
    for seq in rec.store.pending()[:6]:
        rec.store.release(seq, receipt(seq))
    # Another phase, recorded right after the start.
    press(rec, "phase_start", "5", "CASE-2", "4501-0001")
    cam.at(3, lambda: press(rec, "bookmark"))
    cam.at(7, lambda: end_phase(rec))
    cam.at(8, lambda: press(rec, "stop"))
    drive(rec)
    # Everything goes to the dock; the next record follows a head no record on the card shows.
    for seq in rec.store.pending():
        rec.store.release(seq, receipt(seq))
    press(rec, "bookmark", "after all released")
    return rec


# -- one crash point -----------------------------------------------------------------------------
def phase_of(records):
    phase = {}
    for seq in sorted(records):
        f = records[seq]
        if f["kind"] == "event" and f["event"] in ("phase_started", "phase_resumed"):
            phase = f["phase"]
        elif f["kind"] == "event" and f["event"] == "phase_ended":
            phase = {}
    return phase


class Checker:
    def __init__(self, kind, ref, unit_pub, public):
        self.kind = kind
        self.ref = ref
        self.unit_pub = unit_pub
        self.public = public
        self.checked = 0
        self.lost = 0
        self.quarantined = 0
        self.problems = 0
        self.leaked = 0
        self.garbage = 0
        self.garbage_seen = 0
        self.shown = 0
        self.seen = {"gap": 0, "truncated": 0, "resumed": 0, "twin": 0}
        self.doubles = 0  # crash points within a recovery after a crash

    def problem(self, n, text):
        self.problems += 1
        if self.shown < 30:
            self.shown += 1
            print("PROBLEM n=%s %s" % (n, text))

    def durable_at(self, n):
        return [seq for done, seq in self.ref.durable if done <= n]

    def released_before(self, n):
        return [seq for done, seq in self.ref.release_start if done < n]

    def check(self, n, root, image=None):
        """Reboot on the crashed card at `root`, check it, go on recording, check again."""
        self.checked += 1
        self.checks(n, root, image)

    def checks(self, n, root, image, at=None):
        """The checks of `check`; `at` names the point in findings (a cut within a cut)."""
        problem = self.problem
        self.problem = lambda _n, text: problem(n if at is None else at, text)
        try:
            self._checks(n, root, image, at is not None)
        finally:
            self.problem = problem

    def _checks(self, n, root, image, twice):
        fs._gens.clear()
        try:
            rec = boot(root, T_REBOOT, self.unit_pub)
        except Exception as exc:  # noqa: BLE001 - any failure to boot is the finding
            self.problem(n, "boot failed: %r" % (exc,))
            if VERBOSE:
                sys.print_exception(exc)
            return
        store = rec.store
        ref = self.ref
        on_card = {seq: store.read_record(seq) for seq in store.pending()}
        kept = {}
        for r in store.receipts():
            if len(r) != 200 or r[:4] != b"RCPT":
                self.problem(n, "a receipt kept is damaged")
                continue
            kept[struct.unpack("<I", r[4:8])[0]] = r
        started = self.released_before(n + 1)
        for seq in started[-KEEP:]:
            if seq not in kept and seq not in on_card:
                self.problem(n, "record %d freed, its receipt not kept" % seq)
        for seq in kept:
            if seq not in self.released_before(n + 1):
                self.problem(n, "receipt for record %d, never released" % seq)
        for seq in self.durable_at(n):
            if on_card.get(seq) == ref.records[seq]:
                continue
            if seq in started and seq not in on_card:
                continue  # released (its receipt is kept, or rotated out with older ones)
            self.lost += 1
            self.problem(n, "record %d was durable and is %s" % (
                seq, "changed" if seq in on_card else "gone"))
        # The chain, from GENESIS through the card and what the dock took.
        fields = {}
        prev = GENESIS
        for seq in range(1, store.head_seq + 1):
            raw = on_card.get(seq)
            if raw is None:
                raw = ref.records.get(seq) if seq in started else None
            if raw is None:
                self.problem(n, "chain hole at %d (head %d)" % (seq, store.head_seq))
                return
            try:
                f = manifest.decode(cose.parse_sign1(raw).payload)
            except ValueError as exc:
                self.quarantined += 1
                self.problem(n, "record %d does not parse: %s" % (seq, exc))
                return
            if f["prev"] != prev or f["seq"] != seq:
                self.problem(n, "record %d does not link to %d" % (seq, seq - 1))
            prev = record_hash(raw)
            fields[seq] = f
        if store.head_hash != prev:
            self.problem(n, "head hash is not the newest record's")
        new = [s for s in sorted(on_card) if ref.records.get(s) != on_card[s]]
        gaps = [s for s in new if fields[s]["kind"] == "gap"]
        truncated = [s for s in new if fields[s]["kind"] == "segment" and fields[s]["truncated"]]
        if len(gaps) > 1 or len(truncated) > 1:
            # After a second cut, one more gap (and truncated segment) only if the first
            # recovery had resumed recording: a break of its own, not the first one signed
            # twice.
            resumed = [s for s in new if fields[s]["kind"] == "event"
                       and fields[s]["event"] == "phase_resumed"]
            second = twice and len(gaps) == 2 and len(truncated) <= 2 and any(
                gaps[0] < s < gaps[1] for s in resumed)
            if not second:
                self.problem(n, "%d gaps and %d truncated segments after %s" % (
                    len(gaps), len(truncated), "two cuts" if twice else "one cut"))
        for s in new:
            self.verify_record(n, s, on_card[s])
        self.seen["twin"] += any(fs.exists(store.path(s, ".dat")) for s in on_card)
        self.seen["gap"] += len(gaps) > 0
        self.seen["truncated"] += len(truncated) > 0
        self.seen["resumed"] += any(fields[s]["kind"] == "event" and fields[s]["event"] ==
                                    "phase_resumed" for s in new)
        self.check_data(n, store, fields, on_card)
        old = dict((s, f) for s, f in fields.items() if s not in new)
        want = phase_of(old)
        if rec.phase != want:
            self.problem(n, "phase in force %r after reboot, the records say %r"
                         % (rec.phase, want))
        elif want and not rec.recording:
            self.problem(n, "phase %r in force but not recording" % (want,))
        left = self.left_over(store)
        if left:
            self.problem(n, "left on the card: %r" % (left,))
        self.fat(n, image)
        # Go on: record (ending the phase) or sign an event, then the dock takes everything.
        try:
            head, head_hash = store.head_seq, store.head_hash
            if rec.recording or rec._asked:
                cam = rec.hal.camera
                if rec.phase:
                    cam.at(2, lambda: end_phase(rec))
                cam.at(3, lambda: press(rec, "stop"))
                drive(rec)
            else:
                press(rec, "bookmark", "after the reboot")
            if store.head_seq <= head:
                self.problem(n, "nothing signed after the reboot")
            raw = store.read_record(head + 1)
            if manifest.decode(cose.parse_sign1(raw).payload)["prev"] != head_hash:
                self.problem(n, "the record after the reboot does not link")
            for seq in store.pending():
                if seq > head:
                    self.verify_record(n, seq, store.read_record(seq))
                store.release(seq, receipt(seq))
        except Exception as exc:  # noqa: BLE001
            self.problem(n, "after the reboot: %r" % (exc,))
        if store.pending() or self.left_over(store):
            self.problem(n, "after releasing all: %r %r" % (store.pending(),
                                                            self.left_over(store)))
        self.fat(n, image)

    def fat(self, n, image):
        """On FAT: no cluster in two files, no file pointing into free clusters."""
        if image is not None and self.kind == "fat":
            problems, lost, garbage = fat_check(image)
            self.leaked = max(self.leaked, lost)
            self.garbage = max(self.garbage, garbage)
            for p in problems:
                self.problem(n, "FAT: " + p)

    def left_over(self, store):
        """Foreign names on the card, less the stale entries of a FAT directory (counted)."""
        out = []
        for name in store.foreign():
            if sfn_like(name.encode()[4:] if name.startswith("rec/") else name.encode()):
                out.append(name)
            else:
                self.garbage_seen += 1
        return out

    def verify_record(self, n, seq, raw):
        try:
            msg = cose.parse_sign1(raw)
            ok = cached_verify(self.public, msg.tbs, msg.signature)
        except ValueError:
            ok = False
        if not ok:
            self.quarantined += 1
            self.problem(n, "record %d does not verify" % seq)

    def check_data(self, n, store, fields, on_card):
        for seq in on_card:
            f = fields.get(seq)
            if f is None:
                continue
            size = store.data_size(seq)
            if f["kind"] != "segment":
                if size:
                    self.quarantined += 1
                    self.problem(n, "%s record %d has data" % (f["kind"], seq))
                continue
            if not f["size"]:
                self.quarantined += 1  # the vault takes no data for it: size_mismatch
                self.problem(n, "segment %d is empty" % seq)
            digest = hashlib.sha256()
            if size:
                with store.open_data(seq) as fh:
                    digest.update(fh.read())
            if size != f["size"] or digest.digest() != f["sha256"]:
                self.quarantined += 1
                self.problem(n, "segment %d: %d bytes on the card, %d signed%s" % (
                    seq, size, f["size"], "" if size != f["size"] else ", hash differs"))


# -- the runs ------------------------------------------------------------------------------------
def make_policy():
    """A policy signed by a unit key made here (when the caller gives none)."""
    unit = SigningKey(hashlib.sha256(b"crash-points unit").digest())
    doc = policy.annex()
    doc["version"] = 2
    doc["unit"] = "crash points"
    kid = hashlib.sha256(unit.public).digest()[:16]
    return unit.public, policy.sign(doc, kid, unit.sign)


def dump_meta(opts, ref, public, kind, points):
    out = opts["dump"]
    try:
        os.mkdir(out)
    except OSError:
        pass
    rel = out + "/released"
    try:
        os.mkdir(rel)
    except OSError:
        pass
    for _done, seq in ref.release_start:
        with open("%s/%08d.cose" % (rel, seq), "wb") as f:
            f.write(ref.records[seq])
        with open("%s/%08d.bin" % (rel, seq), "wb") as f:
            f.write(ref.data.get(seq, b""))
    gc.collect()
    with open("%s/%s.json" % (out, kind), "w") as f:  # written point by point: a small heap
        f.write('{"device_id": "%s", "public_key": "%s", "fs": "%s", "points": ['
                % (DEVICE_ID, hexlify(public), kind))
        for i, n in enumerate(points):
            f.write(("," if i else "") + json.dumps({
                "n": n,
                "durable": [[seq, hexlify(record_hash(ref.records[seq]))]
                            for done, seq in ref.durable if done <= n],
                "released": [seq for done, seq in ref.release_start if done <= n]}))
        f.write("]}")


def hexlify(b):
    from binascii import hexlify as h

    return h(b).decode()


def block_run(kind, opts, unit_pub, signed_policy):
    ref = Reference()
    bd = fresh_card(kind)
    start = bytes(bd.data)
    bd.log = []
    mount(kind, bd, "/card")
    rec = scenario("/card", unit_pub, signed_policy, ref, lambda: bd.writes)
    public = rec.key.public
    vfs.umount("/card")
    writes = bd.log
    bd.log = None
    total = len(writes)
    checker = Checker(kind, ref, unit_pub, public)
    image = bytearray(start)
    seen = set()
    points = [n for n in range(total + 1) if n < opts["limit"]]
    dumped = []
    for n in points:
        if n:
            a, data = writes[n - 1]
            image[a:a + len(data)] = data
        if opts["only"] and n not in opts["only"]:
            continue
        digest = hashlib.sha256(image).digest()
        if digest in seen:
            continue
        seen.add(digest)
        if opts["dump"] and (n % opts["every"] == 0 or n == total):
            with open("%s/%s-%05d.img" % (opts["dump"], kind, n), "wb") as f:
                f.write(image)
            dumped.append(n)
        card = RamDisk(bytearray(image))
        mount(kind, card, "/crash")
        checker.check(n, "/crash", card.data)
        vfs.umount("/crash")
        if opts["double"] and n % opts["double"] == 0:
            block_double(kind, n, image, checker)
        if n % 64 == 0:
            gc.collect()
    if opts["dump"]:
        dump_meta(opts, ref, public, kind, dumped)
    for n in sample(total, opts["rerun"]):
        rerun(kind, n, image_at(start, writes, n), unit_pub, signed_policy, checker)
    return total, checker


def block_double(kind, n, image, checker):
    """A second cut during the recovery from cut n: at each write that boot makes, then a
    reboot and the same checks (recovery is idempotent: still one gap, nothing lost)."""
    card = RamDisk(bytearray(image))
    card.log = []
    mount(kind, card, "/crash")
    fs._gens.clear()
    try:
        boot("/crash", T_REBOOT, checker.unit_pub)
    except Exception:  # noqa: BLE001 - the plain check reports it
        pass
    vfs.umount("/crash")
    again = bytearray(image)
    for m, (a, data) in enumerate(card.log[:-1]):
        again[a:a + len(data)] = data
        cut = RamDisk(bytearray(again))
        mount(kind, cut, "/crash")
        checker.doubles += 1
        checker.checks(n, "/crash", cut.data, "%d/%d" % (n, m + 1))
        vfs.umount("/crash")


def image_at(start, writes, n):
    image = bytearray(start)
    for a, data in writes[:n]:
        image[a:a + len(data)] = data
    return image


def sample(total, k):
    return [total * (i + 1) // (k + 1) for i in range(k)] if k else []


def rerun(kind, n, replayed, unit_pub, signed_policy, checker):
    """Run the scenario from scratch with a card that takes only n writes, and compare the
    files on it with the replayed card's."""
    bd = fresh_card(kind)
    bd.limit = n
    mount(kind, bd, "/card")
    try:
        scenario("/card", unit_pub, signed_policy, Reference(), lambda: bd.writes)
        checker.problem(n, "rerun: the scenario finished within %d writes" % n)
    except PowerCut:
        pass
    try:
        vfs.umount("/card")
    except OSError:
        pass
    files = []
    for img in (bd.data, replayed):
        card = RamDisk(bytearray(img))
        mount(kind, card, "/crash")
        files.append(tree("/crash"))
        vfs.umount("/crash")
    if files[0] != files[1]:
        checker.problem(n, "rerun: a card cut at write %d differs from the replayed one" % n)
    else:
        print("rerun n=%d: the card cut at write %d holds the replayed files (%d files)"
              % (n, n, len(files[0])))


def posix_run(opts, unit_pub, signed_policy):
    base = opts["work"] + "/posix"
    rmtree(base)
    os.mkdir(base)
    live, crash = base + "/live", base + "/crash"
    os.mkdir(live)
    ref = Reference()
    state = {"ops": 0, "busy": False, "checker": None, "dumped": [], "seen": set()}

    def point(n):
        checker = state["checker"]
        if checker is None or n >= opts["limit"] or (opts["only"] and n not in opts["only"]):
            return
        snap = tree(live)
        digest = hashlib.sha256(repr(sorted(snap.items())).encode()).digest()
        if digest in state["seen"]:
            return
        state["seen"].add(digest)
        state["busy"] = True
        handler = fs._on_full
        try:
            rmtree(crash)
            copytree(live, crash)
            if opts["dump"] and n % opts["every"] == 0:
                copytree(crash, "%s/posix-%05d" % (opts["dump"], n))
                state["dumped"].append(n)
            if opts["double"] and n % opts["double"] == 0:
                posix_double(n, crash, base, checker)  # (from the card as the cut left it)
            checker.check(n, crash)
        finally:
            fs.set_full_handler(handler)
            state["busy"] = False

    def hook(kind, path):
        if state["busy"]:
            return
        point(state["ops"])  # the card as it is before this operation
        state["ops"] += 1

    # A first pass learns the reference (what became durable when); the second checks.
    fs.set_hook(hook)
    rec = scenario(live, unit_pub, signed_policy, ref, lambda: state["ops"])
    fs.set_hook(None)
    public = rec.key.public
    total = state["ops"]
    rmtree(live)
    os.mkdir(live)
    state["ops"] = 0
    state["checker"] = Checker("posix", ref, unit_pub, public)
    fs.set_hook(hook)
    scenario(live, unit_pub, signed_policy, Reference(), lambda: state["ops"])
    fs.set_hook(None)
    point(state["ops"])
    if state["ops"] != total:
        state["checker"].problem(total, "the second run made %d operations, the first %d"
                                 % (state["ops"], total))
    if opts["dump"]:
        if total not in state["dumped"]:
            rmtree("%s/posix-%05d" % (opts["dump"], total))
            copytree(live, "%s/posix-%05d" % (opts["dump"], total))
            state["dumped"].append(total)
        dump_meta(opts, ref, public, "posix", state["dumped"])
    return total, state["checker"]


def posix_double(n, crash, base, checker):
    """A second cut during the recovery from cut n: before each file operation that boot
    makes, the directory is copied aside, rebooted and checked."""
    first, second = base + "/double", base + "/double-cut"
    rmtree(first)
    copytree(crash, first)
    ops = [0]
    busy = [False]

    def hook(kind, path):
        if busy[0]:
            return
        ops[0] += 1
        if ops[0] == 1:
            return  # before the first operation the card is the one checked already
        busy[0] = True
        handler = fs._on_full
        try:
            rmtree(second)
            copytree(first, second)
            checker.doubles += 1
            checker.checks(n, second, None, "%d/%d" % (n, ops[0] - 1))
        finally:
            fs.set_full_handler(handler)
            fs._gens.clear()
            busy[0] = False

    previous = fs._hook
    fs._gens.clear()
    fs.set_hook(hook)
    try:
        boot(first, T_REBOOT, checker.unit_pub)
    except Exception as exc:  # noqa: BLE001 - the plain check reports it
        if VERBOSE:
            sys.print_exception(exc)
    finally:
        fs.set_hook(previous)
    if VERBOSE:
        print("double", n, "ops", ops[0])


def parse(argv):
    opts = {"fs": "", "work": "/tmp/crash-points", "unit-pub": "", "policy": "", "dump": "",
            "every": 1, "limit": 1 << 30, "rerun": 0, "only": [], "verbose": 0, "double": 0}
    i = 0
    while i < len(argv):
        a = argv[i]
        if not a.startswith("--"):
            opts["fs"] = a
            i += 1
            continue
        name = a[2:]
        if name not in opts or i + 1 >= len(argv):
            raise SystemExit("crash_points: bad option %r" % a)
        v = argv[i + 1]
        if name == "only":
            opts[name] = [int(x) for x in v.split(",")]
        elif isinstance(opts[name], int):
            opts[name] = int(v)
        else:
            opts[name] = v
        i += 2
    if opts["fs"] not in ("lfs2", "fat", "posix"):
        raise SystemExit("usage: crash_points.py lfs2|fat|posix [--dump DIR --every K] ...")
    return opts


VERBOSE = False


def main(argv):
    global VERBOSE
    opts = parse(argv)
    VERBOSE = bool(opts["verbose"])
    try:
        os.mkdir(opts["work"])
    except OSError:
        pass
    if opts["unit-pub"]:
        from binascii import unhexlify

        unit_pub = unhexlify(opts["unit-pub"])
        with open(opts["policy"], "rb") as f:
            signed = f.read()
    else:
        unit_pub, signed = make_policy()
    if opts["dump"]:
        try:
            os.mkdir(opts["dump"])
        except OSError:
            pass
    t0 = time.ticks_ms()
    if opts["fs"] == "posix":
        total, checker = posix_run(opts, unit_pub, signed)
    else:
        total, checker = block_run(opts["fs"], opts, unit_pub, signed)
    seconds = time.ticks_diff(time.ticks_ms(), t0) / 1000
    print("RESULT fs=%s points=%d checked=%d lost=%d quarantined=%d problems=%d seconds=%.1f "
          "gaps=%d truncated=%d resumed=%d twins=%d unhidden=%d double=%d leaked_clusters=%d "
          "stale_dir_entries=%d" % (
              opts["fs"], total + 1, checker.checked, checker.lost, checker.quarantined,
              checker.problems, seconds, checker.seen["gap"], checker.seen["truncated"],
              checker.seen["resumed"], checker.seen["twin"], UNHIDDEN[0], checker.doubles,
              checker.leaked, checker.garbage))


if __name__ == "__main__":
    main(sys.argv[1:])
