"""The record store on the device's storage: signed records, their data, and the chain head.

Layout under the storage root:
    rec/00000007.bin   segment data
    rec/00000007.cose  its signed record (COSE_Sign1 bytes, exactly as sent to the dock);
                       event and gap records have no .bin
    rec/current.part   the segment being recorded
    rec/current.meta   CBOR: when it started, its phase, and when the recorder was last alive;
                       present exactly while recording is on, so finding it at boot means
                       recording broke (power loss, crash)
    chain              CBOR {"seq", "hash"}: the last record, written by rename so it is atomic

A record's files are removed only by `release`, which the dock sends after its vault holds
them durably; nothing else deletes.
"""

import os

from device import fs
from protocol import cbor
from protocol.manifest import GENESIS, record_hash


class RecordStore:
    def __init__(self, root: str) -> None:
        self.root = root
        self.dir = root + "/rec"
        try:
            os.mkdir(self.dir)
        except OSError:
            pass
        self.head_seq = 0
        self.head_hash = GENESIS
        self._load_head()

    def _load_head(self) -> None:
        try:
            state = cbor.decode(fs.read(self.root + "/chain"))
            self.head_seq = state["seq"]
            self.head_hash = state["hash"]
        except OSError:
            pass
        # A crash between writing a record and the chain file: adopt the record.
        while fs.exists(self.path(self.head_seq + 1, ".cose")):
            self._advance(self.head_seq + 1, self.read_record(self.head_seq + 1))

    def _advance(self, seq: int, cose_bytes) -> None:
        self.head_seq = seq
        self.head_hash = record_hash(cose_bytes)
        fs.write_atomic(self.root + "/chain", cbor.encode({"seq": seq, "hash": self.head_hash}))

    def path(self, seq: int, ext: str) -> str:
        return "%s/%08d%s" % (self.dir, seq, ext)

    def add(self, seq: int, part_path, cose_bytes) -> None:
        """Commit a record: its data file (if any) in place, then the record, then the head."""
        if seq != self.head_seq + 1:
            raise ValueError("record %d does not follow the chain head %d" % (seq, self.head_seq))
        if part_path:
            os.rename(part_path, self.path(seq, ".bin"))
        fs.write_atomic(self.path(seq, ".cose"), cose_bytes)
        self._advance(seq, cose_bytes)

    # -- the segment being recorded -----------------------------------------------------------
    @property
    def part_path(self) -> str:
        return self.dir + "/current.part"

    def write_meta(self, meta) -> None:
        fs.write_atomic(self.dir + "/current.meta", cbor.encode(meta))

    def read_meta(self):
        """The meta of a recording that was on when the recorder last went down, or None."""
        try:
            return cbor.decode(fs.read(self.dir + "/current.meta"))
        except (OSError, ValueError):
            return None

    def clear_meta(self) -> None:
        fs.remove(self.dir + "/current.meta")

    def part_exists(self) -> bool:
        return fs.exists(self.part_path)

    def read_record(self, seq: int) -> bytes:
        with open(self.path(seq, ".cose"), "rb") as f:
            return f.read()

    def pending(self):
        """Sequence numbers of records still on the device, ascending."""
        out = []
        for entry in os.ilistdir(self.dir):
            name = entry[0]
            if name.endswith(".cose"):
                out.append(int(name[:8]))
        out.sort()
        return out

    def data_size(self, seq: int) -> int:
        try:
            return os.stat(self.path(seq, ".bin"))[6]
        except OSError:
            return 0

    def open_data(self, seq: int):
        return open(self.path(seq, ".bin"), "rb")

    def release(self, seq: int) -> None:
        """Forget a record the dock has stored durably (data first, the record last)."""
        for ext in (".bin", ".cose"):
            try:
                os.remove(self.path(seq, ext))
            except OSError:
                pass
