"""The record store on the device's storage: signed records, their data, the receipts.

Layout under the storage root:
    rec/00000007.cose   a signed record (COSE_Sign1 bytes, exactly as sent to the dock),
                        written once under its name and never rewritten
    rec/00000007.bin    a segment's data (`.dat` instead after a repair, see below); event and
                        gap records have none
    rec/current.part    the segment being recorded
    rec/pre<k>.bin      the pre-event ring (device/recorder.py)
    recording.a, .b     CBOR: when the segment started, its phase, the phase in force, when
                        the recorder was last alive (fs.write_atomic's two copies); holds a map
                        exactly while recording is on, so finding one at boot means recording
                        broke (power loss, crash)
    spare               room kept for a full card (see `ensure_spare`)
    receipts.0, .1      the dock's receipts for what it took, in 512-byte slots, two files
                        taking turns (see `release`)

rec/ holds nothing else, so a recorder with nothing to offload has an empty rec/.

The chain head is not kept in a file of its own: at boot it is the newest record on the card
or, if every record was released, the newest receipt (each receipt entry also carries the
highest record released so far), so it can always be rebuilt and never goes back to GENESIS
while a record or a receipt exists.

Every write goes through device/fs.py (no file is replaced by a rename), in this order:
- a record: `NNNNNNNN.cose` written once; a cut leaves it absent or empty, and boot drops an
  empty newest record (it was never complete, never listed);
- a segment: its record first, then `current.part` renamed to the record's `.bin`. A cut in
  between leaves a record whose data is still `current.part`: boot recognises it by size and
  hash and finishes the rename (it is never salvaged as a new segment, and a gap record
  never gets data). On FAT that rename can be cut between its directory-sector writes,
  leaving two names on one cluster chain (`current.part`, or its short name such as
  CURREN~1.PAR, beside the `.bin`): boot copies the data to `.dat` and removes the names back
  to back (`_repair_twin`);
- a release: the receipt first, then the data, then the record; boot finishes a release a
  cut interrupted (on FAT also a short name like 000000~5.COS that the cut left).

Boot on a big card (thousands of records, a segment of tens of MB to hash) can outlast the
board's watchdog: the store feeds it (`feed`, given by device/app.py) once per unit of
progress of its boot-time work and of `settle`: a directory entry examined (at most the
first _FEED_ENTRIES of a listing: FatFs ends a directory at 65536 entries, so a longer
listing is a damaged one going round, which the watchdog should end), a record read, a
chunk hashed or copied. What the dock asks for (listings, releases) never feeds.

A record's files are removed only by `release`; nothing else deletes a record. Files in rec/
and the root that are not the store's own (including the stale entries a cut leaves in a
FAT directory that was growing) are left alone, never listed as records, and named by
`foreign()`.
"""

import hashlib
import os
import struct
from binascii import crc32

from device import fs
from protocol import cbor, cose, manifest
from protocol.compat import const
from protocol.manifest import GENESIS, record_hash

_DIR = const(0x4000)  # ilistdir type of a directory
_FOREIGN_MAX = const(16)
_SLOT = const(512)  # bytes of a receipt slot
_RECEIPT_MAX = const(428)  # bytes of one dock receipt (a dock-signed COSE_Sign1: ~200)
_KEEP = const(1024)  # receipts kept at least (two files of this many slots at most)
_SPARE_MIN = const(16384)
_SPARE_BLOCKS = const(16)
_ZEROS = bytes(512)
_BUF = const(2048)
_FEED_ENTRIES = const(65536)  # directory entries of a listing that feed the watchdog

PART = "current.part"
# What the store (and the board, for device.id; unix_sim also for rtc, its RTC's setting) keeps
# in the root; everything else is foreign.
_ROOT_OWN = ("rec", "device.key", "device.id", "unit.pub", "policy.cose", "clock",
             "receipts.0", "receipts.1", "recording", "spare", "rtc")


def _listing(path: str, feed=None):
    """(name, is a directory) of each entry of a directory; the name is "" if it is not
    UTF-8 (a FAT directory a cut caught while it grew holds stale bytes as entries).
    `feed()` once per entry, for the first _FEED_ENTRIES."""
    n = 0
    for entry in os.ilistdir(path.encode()):
        if feed is not None and n < _FEED_ENTRIES:
            n += 1
            feed()
        try:
            name = entry[0].decode()  # type: ignore[attr-defined]  # bytes for a bytes path
        except UnicodeError:
            name = ""
        yield name, entry[1] == _DIR


def record_seq(name: str, ext: str) -> int:
    """The sequence number in a record file's name ("00000007.cose"), or 0 if it is not one."""
    if len(name) != 8 + len(ext) or not name.endswith(ext) or not name[:8].isdigit():
        return 0
    return int(name[:8])


def _own_in_rec(name: str) -> bool:
    for ext in (".cose", ".bin", ".dat"):
        if record_seq(name, ext):
            return True
    return name == PART or (name[:3] == "pre" and name[-4:] == ".bin" and name[3:-4].isdigit())


def file_hash(path: str, buf, feed=None) -> tuple:
    """(SHA-256, size) of a file's content, read through `buf` (`feed()` between reads)."""
    digest = hashlib.sha256()
    mv = memoryview(buf)
    size = 0
    with open(path, "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            digest.update(mv[:n])
            size += n
            if feed:
                feed()
    return digest.digest(), size


class RecordStore:
    def __init__(self, root: str, spare: int = 0, buf=None, feed=None) -> None:
        """`buf`: a bytearray the store may read files through (the recorder's camera buffer:
        the store reads only at boot and while the camera loop is between segments, in that
        loop's own task); None: one of its own. `feed`: the board's watchdog feed, called
        per unit of progress of boot and `settle` (see above); None: no watchdog."""
        self.root = root
        self._feed = feed
        self.dir = root + "/rec"
        if not fs.exists(self.dir):
            fs.mkdir(self.dir)
        self.head_seq = 0
        self.head_hash = GENESIS
        # the newest record, decoded (None if released or damaged)
        self.head_fields = None  # type: dict | None
        self._receipts = (root + "/receipts.0", root + "/receipts.1")
        self.keep = _KEEP  # receipt slots per file
        self._active = -1  # the receipts file appended to (-1: not known yet)
        self._spare = spare  # bytes; 0: from the file system's block size at first use
        self.spare_ok = False
        fs.set_full_handler(self.free_spare)
        self._buf = buf if buf is not None else bytearray(_BUF)
        self._meta = root + "/recording"
        self._load_head()
        self.settle()
        self._finish_release()

    # -- boot ---------------------------------------------------------------------------------
    def _load_head(self) -> None:
        feed = self._feed
        seqs = self.pending(feed)
        while seqs:
            if feed is not None:
                feed()
            seq = seqs[-1]
            record = self.read_record(seq)
            if record:
                self.head_seq, self.head_hash = seq, record_hash(record)
                self.head_fields = self.fields(seq, record)  # no second lookup on the card
                break
            # Empty: a cut while it was written (FAT and littlefs give a file its content when
            # it is closed); it was never complete, never listed, never signed for anyone.
            fs.remove(self.path(seq, ".cose"))
            seqs.pop()
        for name, is_dir in _listing(self.dir, feed):
            # On FAT, a cut removal of such a file can leave its short name (000~63EC.COS).
            path = self.dir + "/" + name
            if name[-4:] == ".COS" and "~" in name and not is_dir and fs.size(path) == 0:
                fs.remove(path)
        last = self._last_receipt()[0]
        if last is not None and last[2] > self.head_seq:
            self.head_seq, self.head_hash = last[2], last[3]
            self.head_fields = None

    def settle(self) -> None:
        """Finish a seal a cut (or a full card) interrupted: the newest record's data still in
        current.part. Run at boot, and before a part is salvaged.

        On FAT the rename of current.part to the record's .bin can leave both names on one
        cluster chain (a cut between its directory-sector writes), or, when the entries of the
        long name "current.part" straddle two sectors, the .bin and the part's short name
        (e.g. CURREN~1.PAR, a stray here). Removing either name frees the chain under the other,
        so `_repair_twin` copies the data to `.dat` and removes every name of the chain back to
        back, before anything is allocated."""
        f = self.head_fields
        if f is None or f["kind"] != manifest.KIND_SEGMENT or f["size"] <= 0:
            return
        seq, size, sha = self.head_seq, f["size"], f["sha256"]
        bin_, dat = self.path(seq, ".bin"), self.path(seq, ".dat")
        feed = self._feed
        if fs.exists(bin_) and fs.size(dat) == size and file_hash(dat, self._buf, feed)[0] == sha:
            # A repair was cut after its first removal: this name's chain is already free.
            for path in self._strays(size) + [self.part_path, bin_]:
                if fs.exists(path):
                    fs.remove(path)
            return
        if fs.size(self.part_path) == size and not fs.exists(bin_) and not fs.exists(dat):
            if file_hash(self.part_path, self._buf, feed)[0] == sha:
                fs.rename(self.part_path, bin_)
            return
        if fs.size(bin_) != size:
            return
        twins = [p for p in [self.part_path] + self._strays(size)
                 if fs.size(p) == size and file_hash(p, self._buf, feed)[0] == sha]
        if twins and file_hash(bin_, self._buf, feed)[0] == sha:
            self._repair_twin(seq, twins)

    def _repair_twin(self, seq: int, twins) -> None:
        dat = self.path(seq, ".dat")
        mv = memoryview(self._buf)
        with open(self.path(seq, ".bin"), "rb") as src:
            out = fs.create(dat)
            try:
                while True:
                    n = src.readinto(self._buf)
                    if not n:
                        break
                    fs.write(out, mv[:n])
                    if self._feed is not None:
                        self._feed()
            finally:
                out.close()
        fs.sync()
        # The first removal frees the chain; the others find it free (nothing allocated it).
        for path in twins + [self.path(seq, ".bin")]:
            fs.remove(path)

    def _finish_release(self) -> None:
        """A cut after a receipt was kept, before all of its record was freed: free the rest
        (on FAT, also a short name such as 000000~5.COS left by a removal the cut caught)."""
        last = self._last_receipt()[0]
        if last is None:
            return
        seq, digest = last[0], last[1]
        try:
            if record_hash(self.read_record(seq)) == digest:
                self._free(seq)
        except OSError:
            pass
        for name, is_dir in _listing(self.dir, self._feed):
            path = self.dir + "/" + name
            if name[-4:] == ".COS" and not is_dir and 0 < fs.size(path) <= 4096:
                with open(path, "rb") as f:
                    if record_hash(f.read()) == digest:
                        fs.remove(path)

    # -- records ------------------------------------------------------------------------------
    def path(self, seq: int, ext: str) -> str:
        return "%s/%08d%s" % (self.dir, seq, ext)

    def add(self, seq: int, part_path, cose_bytes, fields=None) -> None:
        """Commit a record (`fields`: its payload, decoded): the record first, then its data
        (if any) under its name. Once the record is written it is the head, whatever happens
        to the rename (a full card: `settle` finishes it)."""
        if seq != self.head_seq + 1:
            raise ValueError("record %d does not follow the chain head %d" % (seq, self.head_seq))
        fs.write_once(self.path(seq, ".cose"), cose_bytes)
        self.head_seq = seq
        self.head_hash = record_hash(cose_bytes)
        self.head_fields = fields
        if part_path:
            fs.rename(part_path, self.path(seq, ".bin"))

    def fields(self, seq: int, record=b""):
        """The decoded payload of record `seq` (whose bytes are `record`, if already read), or
        None (released, or damaged: the dock will say so)."""
        try:
            return manifest.decode(cose.parse_sign1(record or self.read_record(seq)).payload)
        except (OSError, ValueError):
            return None

    def read_record(self, seq: int) -> bytes:
        with open(self.path(seq, ".cose"), "rb") as f:
            return f.read()

    def pending(self, feed=None):
        """Sequence numbers of records still on the device, ascending (`feed()` per entry)."""
        out = []
        for name, is_dir in _listing(self.dir, feed):
            seq = record_seq(name, ".cose")
            if seq and not is_dir:
                out.append(seq)
        out.sort()
        return out

    def foreign(self):
        """Names in rec/ and in the storage root that are not the store's own (at most 16):
        left alone, never listed as records, reported to the dock."""
        out = ["rec/" + (n or "?") for n, is_dir in _listing(self.dir)
               if is_dir or not _own_in_rec(n)]
        for name, is_dir in _listing(self.root):
            base = name[:-2] if name[-2:] in (".a", ".b") else name  # write_atomic's copies
            if base not in _ROOT_OWN or is_dir != (name == "rec"):
                out.append(name or "?")
        return out[:_FOREIGN_MAX]

    def _strays(self, size: int):
        """Files in rec/ that are not the store's own, of `size` bytes: on FAT, a name a cut
        left on a chain (see `settle`)."""
        return [self.dir + "/" + n for n, is_dir in _listing(self.dir, self._feed)
                if n and not is_dir and not _own_in_rec(n) and fs.size(self.dir + "/" + n) == size]

    def _data_path(self, seq: int) -> str:
        path = self.path(seq, ".bin")
        return path if fs.exists(path) else self.path(seq, ".dat")

    def data_size(self, seq: int) -> int:
        return max(0, fs.size(self._data_path(seq)))

    def open_data(self, seq: int):
        return open(self._data_path(seq), "rb")

    def release(self, seq: int, receipt=b"") -> None:
        """Forget a record the dock has stored durably: its receipt (the dock's signed proof)
        is kept first, then the data, then the record are removed.

        Receipts go in 512-byte slots: b"RS", u16 receipt length, u32 CRC-32 of the rest,
        then seq (u32), the record's hash, the highest record released so far (u32 seq and
        hash: the chain head once every record is released), a running index (u32), the
        receipt. A slot is written in place at the end of its file (over a slot a cut tore);
        readers skip slots whose CRC fails. When a file holds `keep` slots the other file is
        started afresh, so at least the last `keep` receipts are kept."""
        if len(receipt) > _RECEIPT_MAX:
            raise ValueError("receipt of %d bytes" % len(receipt))
        digest = record_hash(self.read_record(seq))  # OSError if it is not here
        last, active = self._last_receipt()
        if self._active < 0:
            self._active = max(0, active)
        path = self._receipts[self._active]
        n = max(0, fs.size(path)) // _SLOT
        if n >= self.keep:
            self._active ^= 1
            path, n = self._receipts[self._active], 0
        top = (last[2], last[3], last[4] + 1) if last else (0, GENESIS, 0)
        if seq > top[0]:
            top = (seq, digest, top[2])
        body = (struct.pack("<I", seq) + digest + struct.pack("<I", top[0]) + top[1]
                + struct.pack("<I", top[2]) + receipt)
        slot = struct.pack("<2sHI", b"RS", len(receipt), crc32(body)) + body
        fs.put_at(path, n * _SLOT, slot + bytes(_SLOT - len(slot)))
        self._free(seq)

    def _free(self, seq: int) -> None:
        for ext in (".bin", ".dat", ".cose"):
            if fs.exists(self.path(seq, ext)):
                fs.remove(self.path(seq, ext))

    def _slots(self, i: int, tail: bool):
        """(seq, hash, top seq, top hash, index, receipt) of each intact slot of receipts file
        i, or only of the newest one with `tail`."""
        path = self._receipts[i]
        n = max(0, fs.size(path)) // _SLOT
        out = []
        if n:
            with open(path, "rb") as f:
                for k in range(n - 1, -1, -1) if tail else range(n):
                    f.seek(k * _SLOT)
                    slot = f.read(_SLOT)
                    body = slot[8:84 + min(struct.unpack("<H", slot[2:4])[0], _RECEIPT_MAX)]
                    if slot[:2] != b"RS" or crc32(body) != struct.unpack("<I", slot[4:8])[0]:
                        continue
                    seq, top, index = struct.unpack("<III", body[:4] + body[36:40] + body[72:76])
                    out.append((seq, body[4:36], top, body[40:72], index, body[76:]))
                    if tail:
                        break
        return out

    def _last_receipt(self):
        """(the newest intact slot or None, the file it is in or -1)."""
        best, where = None, -1
        for i in (0, 1):
            for slot in self._slots(i, True):
                if best is None or slot[4] >= best[4]:
                    best, where = slot, i
        return best, where

    def receipts(self):
        """The receipts kept, oldest first (at least the last 1024)."""
        slots = self._slots(0, False) + self._slots(1, False)
        slots.sort(key=lambda s: s[4])
        return [s[5] for s in slots]

    # -- the segment being recorded -----------------------------------------------------------
    @property
    def part_path(self) -> str:
        return self.dir + "/" + PART

    def write_meta(self, meta) -> None:
        fs.write_atomic(self._meta, cbor.encode(meta))

    def read_meta(self):
        """The meta of a recording that was on when the recorder last went down, or None."""
        try:
            meta = cbor.decode(fs.read(self._meta))
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) and "t_alive" in meta else None

    def clear_meta(self) -> None:
        if self.read_meta() is not None:
            fs.write_atomic(self._meta, b"")

    def part_exists(self) -> bool:
        return fs.exists(self.part_path)

    # -- room for a full card -----------------------------------------------------------------
    def spare_size(self) -> int:
        if not self._spare:
            try:
                block = os.statvfs(self.root)[0]
            except OSError:
                block = 4096
            self._spare = max(_SPARE_MIN, _SPARE_BLOCKS * block)
        return self._spare

    def ensure_spare(self) -> bool:
        """Keep `spare_size()` bytes in rec/spare: freed when the card fills, it leaves room to
        seal the last segment, sign the storage_full gap and take the dock's receipts. False
        while the card has no room for it."""
        if self.spare_ok:
            return True
        path = self.root + "/spare"
        have = max(0, fs.size(path))
        want = self.spare_size()
        if have < want:
            try:
                f = fs.create(path)
                try:
                    for _ in range(0, want, len(_ZEROS)):
                        fs.write(f, _ZEROS)
                finally:
                    f.close()
            except OSError as exc:
                if not fs.is_full(exc):
                    raise
                return False
        self.spare_ok = True
        return True

    def free_spare(self) -> bool:
        """Give the spare's room back to the card (fs calls this on ENOSPC); True if it did."""
        self.spare_ok = False
        path = self.root + "/spare"
        if not fs.exists(path):
            return False
        fs.remove(path)
        return True
