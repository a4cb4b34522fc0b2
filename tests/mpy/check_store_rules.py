"""The record store's rules, one at a time, on real card file systems inside MicroPython.

    micropython -X heapsize=16m tests/mpy/check_store_rules.py

On littlefs and FAT over a block device in RAM (device/store.py):
- names in rec/ that look almost like the store's own (`0000001x.cose`, `pre1x.bin`) are not
  records nor the pre-event ring: never listed, reported by `foreign()`;
- a record that is not a COSE_Sign1 can be the head (its fields are None), it does not stop boot;
- receipts: 512-byte slots, `keep` slots a file, then the other file; at a reboot appends go
  on where the newest receipt is, none overwritten; a torn last slot is skipped; released out
  of order, the highest record released stays the head (also when a released seq is
  released again); a cut mid-release of the newest record leaves it the head, fields and all,
  and boot finishes the release; a receipt of the maximum size
  round-trips; receipts written earlier in the documented layout are read; the default
  `keep` is 1024 (the 1024th receipt still goes in receipts.0, the 1025th starts receipts.1);
- boot finishes a release: a short name left over (`*.COS` holding the released record) is
  removed, a foreign copy, a directory and an empty `.COS` are left alone;
- boot finishes a repair a cut caught after its first removal: the `.bin`, the part and the
  strays of the segment's size go, the `.dat` and files of other sizes stay; a sealed
  segment's data stays in its `.bin`, and a `.bin` that does not match its record is never
  repaired from (the part holding the signed data is kept);
- the spare: its size (given, or from the block size), the file written is exactly that
  size, no room means False (not an error), and a full card gets its room back from it.

Prints "ok <name>" per check and "ALL OK"; exits 1 on the first failure.
"""

import hashlib
import struct
import sys
from binascii import crc32

import vfs

sys.path.append("tests/mpy")
from cards import add_events, card, fake_record, ok, read, write  # noqa: E402

from device import fs  # noqa: E402
from device.store import RecordStore  # noqa: E402
from protocol.manifest import GENESIS  # noqa: E402

SLOT = 512
SPARE = 1024


def attempt(fn, *args):
    """(result, None) or (None, the exception fn raised)."""
    try:
        return fn(*args), None
    except Exception as exc:  # noqa: BLE001 - a check names what went wrong
        return None, exc


def boot(root, spare=SPARE, keep=None):
    fs._gens.clear()
    args = (root,) if spare is None else (root, spare)  # None: the default spare
    store, exc = attempt(RecordStore, *args)
    ok("(boot succeeds)", exc is None, repr(exc))
    if keep is not None:
        store.keep = keep
    return store


def slot_bytes(seq, digest, top, top_hash, index, receipt):
    """A receipt slot in the layout device/store.py documents (release's docstring)."""
    body = (struct.pack("<I", seq) + digest + struct.pack("<I", top) + top_hash
            + struct.pack("<I", index) + receipt)
    slot = struct.pack("<2sHI", b"RS", len(receipt), crc32(body)) + body
    return slot + bytes(SLOT - len(slot))


# -- names ------------------------------------------------------------------------------------
def check_names(kind):
    root = card(kind)
    store = boot(root)
    add_events(store, 2)
    for name in ("0000001x.cose", "pre1x.bin", "pre.bin"):
        write(root + "/rec/" + name, b"not ours")
    store = boot(root)
    ok(kind + ": a name with a non-digit 8th character is not a record",
       store.pending() == [1, 2], store.pending())
    foreign = store.foreign()
    ok(kind + ": foreign() names 0000001x.cose", "rec/0000001x.cose" in foreign, foreign)
    ok(kind + ": pre1x.bin is not the pre-event ring: foreign() names it",
       "rec/pre1x.bin" in foreign, foreign)
    ok(kind + ": pre.bin is not the pre-event ring: foreign() names it",
       "rec/pre.bin" in foreign, foreign)
    write(root + "/rec/pre12.bin", b"ring")
    ok(kind + ": pre12.bin is the pre-event ring, not foreign",
       "rec/pre12.bin" not in store.foreign(), store.foreign())
    vfs.umount("/t")


def check_damaged_head(kind):
    root = card(kind)
    store = boot(root)
    add_events(store, 2)
    write(root + "/rec/00000003.cose", b"garbage, not a COSE_Sign1")
    fs._gens.clear()
    store, exc = attempt(RecordStore, root, SPARE)
    ok(kind + ": a damaged newest record does not stop boot", exc is None, repr(exc))
    ok(kind + ": it is the head, with no fields",
       store.head_seq == 3 and store.head_fields is None, (store.head_seq, store.head_fields))
    ok(kind + ": fields() of a damaged record is None", store.fields(3) is None)
    vfs.umount("/t")


# -- receipts ---------------------------------------------------------------------------------
def check_receipt_files(kind):
    root = card(kind)
    store = boot(root, keep=3)
    add_events(store, 6)
    r0, r1 = root + "/receipts.0", root + "/receipts.1"
    for seq in (1, 2, 3):
        store.release(seq, b"receipt-%d" % seq)
    ok(kind + ": the first receipts go in receipts.0, one 512-byte slot each",
       fs.size(r0) == 3 * SLOT and not fs.exists(r1), (fs.size(r0), fs.size(r1)))
    store.release(4, b"receipt-4")
    ok(kind + ": at `keep` slots receipts.0 is left as it is",
       fs.size(r0) == 3 * SLOT, fs.size(r0))
    ok(kind + ": and the next receipt starts receipts.1", fs.size(r1) == SLOT, fs.size(r1))
    store = boot(root, keep=3)
    store.release(5, b"receipt-5")
    kept = store.receipts()
    ok(kind + ": after a reboot receipts go on after the newest, none overwritten",
       kept == [b"receipt-%d" % s for s in (1, 2, 3, 4, 5)], kept)
    ok(kind + ": in the file the newest was in", fs.size(r1) == 2 * SLOT, fs.size(r1))
    big = bytes((i * 13) & 0xFF for i in range(428))
    store.release(6, big)
    store = boot(root, keep=3)
    ok(kind + ": a receipt of the maximum size (428 bytes) round-trips",
       store.receipts()[-1] == big, len(store.receipts()[-1]))
    vfs.umount("/t")


def check_release_order(kind):
    root = card(kind)
    store = boot(root)
    add_events(store, 3)
    h3 = store.head_hash
    for seq in (3, 2, 1):
        _, exc = attempt(store.release, seq, b"receipt-%d" % seq)
        ok(kind + ": releasing record %d after a newer one works" % seq, exc is None, repr(exc))
    store = boot(root)
    ok(kind + ": released out of order, the head is the highest record released",
       (store.head_seq, store.head_hash) == (3, h3), store.head_seq)
    vfs.umount("/t")


def check_release_again(kind):
    root = card(kind)
    store = boot(root)
    add_events(store, 3)
    h3 = store.head_hash
    store.release(3, b"receipt-3")
    # Other bytes put back under the released record's name, then released too: the chain
    # head stays the record that was released first.
    write(root + "/rec/00000003.cose", b"other bytes under a released name")
    store.release(3, b"receipt-3 again")
    store.release(2, b"receipt-2")
    store.release(1, b"receipt-1")
    store = boot(root)
    ok(kind + ": a released seq released again keeps the first one's hash as the head",
       (store.head_seq, store.head_hash) == (3, h3), store.head_seq)
    vfs.umount("/t")


def check_release_cut(kind):
    root = card(kind)
    store = boot(root)
    add_events(store, 3)
    h3 = store.head_hash
    raw3 = store.read_record(3)
    store.release(3, b"receipt-3")
    write(root + "/rec/00000003.cose", raw3)  # a cut after the receipt, before the removal
    store = boot(root)
    ok(kind + ": a cut mid-release of the newest record: it is still the head",
       (store.head_seq, store.head_hash) == (3, h3), store.head_seq)
    ok(kind + ": and boot knows its fields (the phase in force comes from them)",
       store.head_fields is not None and store.head_fields["seq"] == 3, store.head_fields)
    ok(kind + ": boot finished the release", store.pending() == [1, 2], store.pending())
    vfs.umount("/t")


def check_torn_last_slot(kind):
    root = card(kind)
    store = boot(root)
    add_events(store, 3)
    h3 = store.head_hash
    for seq in (1, 2, 3):
        store.release(seq, b"receipt-%d" % seq)
    # A whole slot at the end whose check fails (a cut tore it after the file grew).
    with open(root + "/receipts.0", "ab") as f:
        f.write(b"RS\x09\x00" + bytes(SLOT - 4))
    store = boot(root)
    ok(kind + ": a torn last slot is skipped: the head is the slot before it",
       (store.head_seq, store.head_hash) == (3, h3), store.head_seq)
    ok(kind + ": and the receipts before it are all there",
       store.receipts() == [b"receipt-1", b"receipt-2", b"receipt-3"], store.receipts())
    vfs.umount("/t")


def check_default_keep():
    # 1023 receipts kept by earlier firmware, in the documented 512-byte slots.
    root = card("lfs2", blocks=4096)
    prev = GENESIS
    slots = []
    for seq in range(1, 1024):
        digest = hashlib.sha256(b"record %d" % seq).digest()
        slots.append(slot_bytes(seq, digest, seq, digest, seq - 1, b"r%d" % seq))
        prev = digest
    write(root + "/receipts.0", b"".join(slots))
    del slots
    store = boot(root)
    ok("lfs2: receipts in 512-byte slots from before are all read",
       len(store.receipts()) == 1023 and store.receipts()[-1] == b"r1023",
       len(store.receipts()))
    ok("lfs2: the head comes from the last of them",
       (store.head_seq, store.head_hash) == (1023, prev), store.head_seq)
    add_events(store, 2)
    r0, r1 = root + "/receipts.0", root + "/receipts.1"
    store.release(1024, b"r1024")
    ok("lfs2: the 1024th receipt still goes in receipts.0",
       fs.size(r0) == 1024 * SLOT and not fs.exists(r1), (fs.size(r0), fs.size(r1)))
    store.release(1025, b"r1025")
    ok("lfs2: the 1025th receipt starts receipts.1",
       fs.size(r0) == 1024 * SLOT and fs.size(r1) == SLOT, (fs.size(r0), fs.size(r1)))
    kept = store.receipts()
    ok("lfs2: all 1025 receipts are kept", len(kept) == 1025 and kept[-1] == b"r1025",
       len(kept))
    vfs.umount("/t")


# -- boot finishing a release ----------------------------------------------------------------
def check_finish_release(kind):
    root = card(kind)
    store = boot(root)
    add_events(store, 3)
    raw2 = store.read_record(2)
    store.release(2, b"receipt-2")
    # Left as a cut after the receipt could leave them (a short name of record 2 on FAT), and
    # files that are not the store's own.
    write(root + "/rec/ZZZZZZ~9.COS", raw2)
    write(root + "/rec/00000002.cose.bak", raw2)
    import os

    os.mkdir(root + "/rec/DIR.COS")
    store = boot(root)
    ok(kind + ": a short name holding the released record is removed at boot",
       not fs.exists(root + "/rec/ZZZZZZ~9.COS"))
    ok(kind + ": a foreign copy of the released record is left alone",
       read(root + "/rec/00000002.cose.bak") == raw2)
    ok(kind + ": a directory named like a short name is left alone",
       fs.exists(root + "/rec/DIR.COS"))
    ok(kind + ": the other records stay", store.pending() == [1, 3], store.pending())
    vfs.umount("/t")


def check_empty_cos(kind):
    root = card(kind)
    store = boot(root)
    add_events(store, 1)
    store.add(2, None, b"")  # a record with no bytes (released before any reboot)
    store.release(2, b"receipt-2")
    write(root + "/rec/EMPTY.COS", b"")
    store = boot(root)
    ok(kind + ": an empty .COS is never taken for a released record's leftover",
       fs.exists(root + "/rec/EMPTY.COS"))
    vfs.umount("/t")


# -- boot finishing a repair -----------------------------------------------------------------
def check_repair_cut(kind):
    root = card(kind)
    store = boot(root)
    add_events(store, 2)
    data = bytes((i * 7 + 3) & 0xFF for i in range(1500))
    sha = hashlib.sha256(data).digest()
    write(store.part_path, data)
    raw, fields = fake_record(3, store.head_hash, "segment", len(data), sha)
    store.add(3, store.part_path, raw, fields)
    rec = root + "/rec/"
    # A repair (_repair_twin) cut after it copied the data to .dat and removed the first name:
    # the other names of the chain are still listed.
    write(rec + "00000003.dat", data)
    write(rec + "current.part", data)
    write(rec + "STRAY.PAR", data)  # a short name on the chain
    write(rec + "notes.txt", b"someone's notes")  # foreign, another size
    store = boot(root)
    ok(kind + ": a cut repair: the .bin name is removed", not fs.exists(rec + "00000003.bin"))
    ok(kind + ": a cut repair: the part is removed", not fs.exists(rec + "current.part"))
    ok(kind + ": a cut repair: a stray of the segment's size is removed",
       not fs.exists(rec + "STRAY.PAR"))
    ok(kind + ": a cut repair: a foreign file of another size is left alone",
       read(rec + "notes.txt") == b"someone's notes")
    ok(kind + ": a cut repair: the data is the .dat",
       store.data_size(3) == len(data) and read(rec + "00000003.dat") == data)
    vfs.umount("/t")


def add_segment(store, data):
    sha = hashlib.sha256(data).digest()
    write(store.part_path, data)
    seq = store.head_seq + 1
    raw, fields = fake_record(seq, store.head_hash, "segment", len(data), sha)
    store.add(seq, store.part_path, raw, fields)
    return seq


def check_sealed_segment(kind):
    root = card(kind)
    store = boot(root)
    data = bytes((i * 5 + 1) & 0xFF for i in range(1200))
    seq = add_segment(store, data)
    bin_, dat = store.path(seq, ".bin"), store.path(seq, ".dat")
    store = boot(root)
    ok(kind + ": a sealed segment's data stays in its .bin across a reboot",
       read(bin_) == data and not fs.exists(dat), (fs.size(bin_), fs.size(dat)))
    # Its .bin damaged (same size, other bytes) while the part holds the signed data: no
    # repair from a .bin that does not match its record.
    bad = bytes(len(data))
    write(bin_, bad)
    write(store.part_path, data)
    store = boot(root)
    ok(kind + ": a .bin that does not match its record is not repaired from",
       read(bin_) == bad and not fs.exists(dat), (fs.size(bin_), fs.size(dat)))
    ok(kind + ": and the part holding the signed data is kept", read(store.part_path) == data)
    vfs.umount("/t")


# -- the spare --------------------------------------------------------------------------------
def check_spare(kind):
    root = card(kind)
    store = boot(root, spare=SPARE)
    ok(kind + ": a spare size given is the spare size", store.spare_size() == SPARE,
       store.spare_size())
    ok(kind + ": ensure_spare() keeps it", store.ensure_spare())
    ok(kind + ": the spare file is exactly that size", fs.size(root + "/spare") == SPARE,
       fs.size(root + "/spare"))
    ok(kind + ": free_spare() says it freed room", store.free_spare() is True)
    ok(kind + ": the spare is gone", not fs.exists(root + "/spare"))
    ok(kind + ": free_spare() without a spare says it freed nothing",
       store.free_spare() is False)
    store = boot(root, spare=None)
    ok(kind + ": no spare size given: on 512-byte blocks the spare is 16 KiB",
       store.spare_size() == 16384, store.spare_size())
    ok(kind + ": ensure_spare() writes 16 KiB", store.ensure_spare()
       and fs.size(root + "/spare") == 16384, fs.size(root + "/spare"))
    vfs.umount("/t")


def check_spare_small_card(kind):
    root = card(kind, blocks=64)  # 32 KiB: no room for a 64 KiB spare
    store = boot(root, spare=65536)
    got, exc = attempt(store.ensure_spare)
    ok(kind + ": no room for the spare: ensure_spare() says False, no error",
       got is False and exc is None, repr((got, exc)))
    ok(kind + ": and the spare is not counted as kept", not store.spare_ok)
    vfs.umount("/t")


def check_full_card(kind):
    root = card(kind, blocks=256)
    store = boot(root, spare=16384)
    add_events(store, 1)
    ok(kind + ": the spare is kept", store.ensure_spare())
    # Fill what is left with files written whole (each committed when it is closed).
    full = None
    n = 0
    for size in (4096, 512):
        while full is None:
            try:
                with open(root + "/filler%d" % n, "wb") as f:
                    f.write(bytes(size))
            except OSError as exc:
                full = exc
            n += 1
        if size == 4096:
            full = None
    ok(kind + ": the card fills", fs.is_full(full), repr(full))
    raw, fields = fake_record(2, store.head_hash)
    _, exc = attempt(store.add, 2, None, raw, fields)
    ok(kind + ": a record is still signed on a full card (the spare gives its room)",
       exc is None and store.read_record(2) == raw, repr(exc))
    ok(kind + ": the spare was given back", not fs.exists(root + "/spare"))
    vfs.umount("/t")


class BigBlocks:
    """A block device in RAM with 4096-byte blocks."""

    def __init__(self, blocks):
        self.data = bytearray(4096 * blocks)
        self.blocks = blocks

    def readblocks(self, n, buf, off=0):
        a = n * 4096 + off
        memoryview(buf)[:] = memoryview(self.data)[a:a + len(buf)]

    def writeblocks(self, n, buf, off=None):
        a = n * 4096 + (off or 0)
        self.data[a:a + len(buf)] = buf

    def ioctl(self, op, arg):
        if op == 4:
            return self.blocks
        if op == 5:
            return 4096
        if op == 6:  # erase
            return 0
        return 0


def check_spare_big_blocks():
    bd = BigBlocks(64)
    vfs.VfsLfs2.mkfs(bd)
    vfs.mount(vfs.VfsLfs2(bd, mtime=False), "/t")
    fs._gens.clear()
    store = boot("/t", spare=0)
    ok("lfs2: on 4096-byte blocks the spare is 16 blocks (64 KiB)",
       store.spare_size() == 16 * 4096, store.spare_size())
    vfs.umount("/t")


for kind in ("lfs2", "fat"):
    check_names(kind)
    check_damaged_head(kind)
    check_receipt_files(kind)
    check_release_order(kind)
    check_release_again(kind)
    check_release_cut(kind)
    check_torn_last_slot(kind)
    check_finish_release(kind)
    check_empty_cos(kind)
    check_repair_cut(kind)
    check_sealed_segment(kind)
    check_spare(kind)
    check_spare_small_card(kind)
    check_full_card(kind)
check_default_keep()
check_spare_big_blocks()
print("ALL OK")
