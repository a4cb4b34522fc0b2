"""The record store and the recorder on real card file systems, inside MicroPython.

    micropython -X heapsize=16m tests/mpy/check_store.py

On littlefs and FAT over a block device in RAM (and a host directory where it matters):
- files the store does not own (a macOS `._00000001.cose`, `foo.cose`, `00000001.cose.bak`,
  a directory, junk in the root) are never listed as records and are reported by `foreign()`
  (at most 16), and docking-side calls (`read_record`, `data_size`) work around them;
- `release(seq, receipt)` keeps the receipt before freeing; `receipts()` gives them oldest
  first, across reboots, after a torn append, and across generations (at least the last
  `keep`);
- the chain head comes back from the records, or from the receipts once every record was
  released, and a record a cut left empty is dropped; older firmware's chain file is used
  only when it is ahead;
- fs.write_atomic's two copies: a torn newer copy leaves the older content;
- a card that fills during a continuous phase (a real ENOSPC from VfsLfs2 / VfsFat): the
  recorder seals what the card holds, signs a storage_full gap, keeps the phase, can still
  sign events; when the dock frees room (releases) it signs phase_resumed after that gap and
  records again; a reboot while full waits for room instead of signing another gap.

Prints "ok <name>" per check and "ALL OK"; exits 1 on the first failure.
"""

import asyncio
import hashlib
import struct
import sys

import vfs

sys.path.append("tests/mpy")
import crash_points as cp  # noqa: E402
from cards import add_events, card, fake_record, ok, write  # noqa: E402

from device import fs  # noqa: E402
from device.store import RecordStore  # noqa: E402
from protocol import cose, manifest  # noqa: E402
from protocol.manifest import record_hash  # noqa: E402

UNIT_PUB, POLICY = cp.make_policy()


def check_foreign(kind):
    root = card(kind)
    store = RecordStore(root, spare=1024)
    add_events(store, 3)
    import os

    for name in ("._00000001.cose", "foo.cose", "00000001.cose.bak", "0000001.cose",
                 "00000000x.cose", "current.part.old"):
        write(root + "/rec/" + name, b"not ours")
    os.mkdir(root + "/rec/00000009.cose")  # a directory with a record's name
    os.mkdir(root + "/rec/System Volume Information")
    write(root + "/notes.txt", b"x")
    store = RecordStore(root, spare=1024)  # a reboot among them
    ok(kind + ": pending() lists only records", store.pending() == [1, 2, 3], store.pending())
    foreign = sorted(store.foreign())
    want = sorted(["rec/._00000001.cose", "rec/foo.cose", "rec/00000001.cose.bak",
                   "rec/0000001.cose", "rec/00000000x.cose", "rec/current.part.old",
                   "rec/00000009.cose", "rec/System Volume Information", "notes.txt"])
    ok(kind + ": foreign() names them", foreign == want, foreign)
    ok(kind + ": the head ignores them", store.head_seq == 3)
    for i in range(30):
        write(root + "/rec/junk%d" % i, b"j")
    ok(kind + ": foreign() is bounded", len(store.foreign()) == 16)
    store.release(1, b"r1")
    ok(kind + ": foreign files survive a release", fs.exists(root + "/rec/._00000001.cose"))
    vfs.umount("/t")


def check_receipts(kind):
    root = card(kind)
    store = RecordStore(root, spare=1024)
    store.keep = 3
    add_events(store, 10)
    hashes = {s: record_hash(store.read_record(s)) for s in store.pending()}
    for seq in (1, 2, 3, 4):
        store.release(seq, b"receipt-%d" % seq)
    ok(kind + ": receipts kept in order", list(store.receipts()) == [
        b"receipt-1", b"receipt-2", b"receipt-3", b"receipt-4"], list(store.receipts()))
    ok(kind + ": released records are gone", store.pending() == [5, 6, 7, 8, 9, 10])
    store = RecordStore(root, spare=1024)
    store.keep = 3
    ok(kind + ": receipts survive a reboot", len(list(store.receipts())) == 4)
    # A cut tore the last append: the complete ones stay readable, and later appends too.
    active = [p for p in store._receipts if fs.exists(p)][-1]
    with open(active, "ab") as f:
        f.write(b"RC\x40\x00garbage")
    store = RecordStore(root, spare=1024)
    store.keep = 3
    for seq in (5, 6, 7, 8, 9, 10):
        store.release(seq, b"receipt-%d" % seq)
    kept = list(store.receipts())
    ok(kind + ": a torn entry is skipped, the last `keep` are kept",
       kept[-3:] == [b"receipt-8", b"receipt-9", b"receipt-10"] and 3 <= len(kept) <= 6, kept)
    ok(kind + ": every record released", store.pending() == [])
    store = RecordStore(root, spare=1024)
    ok(kind + ": the head comes back from the receipts",
       (store.head_seq, store.head_hash) == (10, hashes[10]), store.head_seq)
    raw, fields = fake_record(11, store.head_hash)
    store.add(11, None, raw, fields)
    ok(kind + ": the chain goes on from it", store.pending() == [11])
    vfs.umount("/t")


def check_head(kind):
    root = card(kind)
    store = RecordStore(root, spare=1024)
    add_events(store, 3)
    h3 = store.head_hash
    write(root + "/rec/00000004.cose", b"")  # a cut while record 4 was written
    write(root + "/chain", b"\xff\xfe damaged")  # older firmware's head file, damaged
    store = RecordStore(root, spare=1024)
    ok(kind + ": an empty newest record is dropped", store.pending() == [1, 2, 3])
    ok(kind + ": the head is record 3", (store.head_seq, store.head_hash) == (3, h3))
    import protocol.cbor as cbor

    write(root + "/chain", cbor.encode({"seq": 2, "hash": bytes(32)}))
    store = RecordStore(root, spare=1024)
    ok(kind + ": an older chain file behind the records is not used", store.head_seq == 3)
    vfs.umount("/t")


def check_atomic(kind):
    root = card(kind)
    path = root + "/clock"
    fs.write_atomic(path, b"one")
    fs.write_atomic(path, b"two")
    ok(kind + ": write_atomic reads back the newest", fs.read(path) == b"two")
    fs._gens.clear()
    # A cut while the third copy was written (it goes where "one" was: copies take turns).
    with open(path + ".b", "wb") as f:
        f.write(b"\xb5\x1b" + struct.pack("<III", 3, 5, 0) + b"th")
    ok(kind + ": a torn copy leaves the content before it", fs.read(path) == b"two")
    fs.write_atomic(path, b"three")
    ok(kind + ": and the next write goes on", fs.read(path) == b"three")
    write(root + "/legacy", b"plain")
    ok(kind + ": a file of older firmware reads as it is", fs.read(root + "/legacy") == b"plain")
    vfs.umount("/t")


def check_full(kind):
    # 128 KiB: room for a dozen 3 KB segments and their records besides a 16 KiB spare.
    root = card(kind, blocks=256)
    rec = cp.boot(root, cp.T_FIRST, UNIT_PUB, spare=16384)
    store = rec.store
    ok(kind + ": the spare is kept", rec.store.ensure_spare())
    cp.press(rec, "phase_start", "4", "CASE-FULL", "4501-0009")
    steps = 0
    while not rec.full and steps < 200:
        cp.run(rec.step())
        steps += 1
    ok(kind + ": the card filled mid-phase", rec.full > 0, (rec.full, steps))
    gap = cp.manifest.decode(cose.parse_sign1(store.read_record(rec.full)).payload)
    ok(kind + ": a storage_full gap is signed",
       gap["kind"] == "gap" and gap["cause"] == "storage_full" and gap["phase"]["row"] == 4,
       gap)
    before = store.read_record(rec.full - 1)
    last = manifest.decode(cose.parse_sign1(before).payload)
    if last["kind"] == "segment":
        with store.open_data(rec.full - 1) as f:
            data = f.read()
        # (littlefs drops what was written since the file was last committed: the part can
        # be empty, and then the last complete segment is the last one.)
        ok(kind + ": the last segment is sealed with what the card holds",
           hashlib.sha256(data).digest() == last["sha256"] and len(data) == last["size"], last)
    ok(kind + ": the phase stays in force", rec.phase.get("row") == 4 and rec.recording)
    ok(kind + ": the indicator says so", rec.hal.indicator.state == "storage_full")
    seq = rec.event("notice_given", {})
    ok(kind + ": events are still signed on a full card", seq == store.head_seq)
    asyncio.run(rec._wait_for_room())
    ok(kind + ": no room, no recording", rec.full > 0)
    # A reboot while full: the same gap still stands, no second one.
    gap_seq = rec.full
    fs._gens.clear()
    rec = cp.boot(root, cp.T_REBOOT, UNIT_PUB, spare=16384)
    store = rec.store
    ok(kind + ": a reboot while full waits for room", rec.full == gap_seq and rec.phase,
       (rec.full, gap_seq))
    # The dock takes the first records and frees them.
    for s in store.pending()[:-3]:
        store.release(s, b"receipt")
    asyncio.run(rec._wait_for_room())
    ok(kind + ": recording resumes once the dock freed room", not rec.full and rec.recording)
    resumed = manifest.decode(cose.parse_sign1(store.read_record(store.head_seq)).payload)
    ok(kind + ": phase_resumed after the gap", resumed["event"] == "phase_resumed"
       and resumed["detail"] == {"after_gap": gap_seq}, resumed)
    cp.run(rec.step())
    seg = manifest.decode(cose.parse_sign1(store.read_record(store.head_seq)).payload)
    ok(kind + ": and a segment of the phase follows", seg["kind"] == "segment"
       and seg["phase"]["row"] == 4 and not seg["truncated"], seg)
    vfs.umount("/t")


for kind in ("lfs2", "fat"):
    check_foreign(kind)
    check_receipts(kind)
    check_head(kind)
    check_atomic(kind)
    check_full(kind)
print("ALL OK")
