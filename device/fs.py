"""Every write the recorder makes to its card goes through here, so that a power cut at any
instant leaves a state the next boot understands, on FAT as on littlefs or a host directory.

No file is ever renamed to replace another. FAT (MicroPython's VfsFat) has no atomic rename:
a rename onto an existing name removes the target first, and even a rename to a new name is
two directory-sector writes when the two entries lie in different sectors, so a cut between
them leaves two names on one cluster chain (removing either then frees the other's data).
Three kinds of file instead:

- Records and segment data get a name of their own once and are never rewritten
  (device/store.py; the one rename it makes, a finished segment's data to its record's name,
  is finished, or repaired if a cut left two names on the data, at boot). The receipts log
  is fixed-size slots written in place (`put_at`), each with its own check.
- Small files that change (the recording meta, the clock, the policy): `write_atomic(path,
  data)` keeps two copies, `path.a` and `path.b`, each with a header (generation, length,
  CRC-32), and overwrites the older one in place, so a cut leaves the newer one intact.
  `read(path)` returns the newest complete copy (with none, the file `path` itself).
  Writing b"" is how such a file is cleared: one write, no window.
- Files written once (the device key, the device id, the unit key): `write_once`, straight to
  their name; a cut leaves no file or an empty one, which readers take as "never written".

A full card: every writer here retries once after the handler set with `set_full_handler`
freed room (the record store keeps a spare file for that), so that signing a record or taking
a dock's receipt still works on a card the camera has just filled.

FAT also loses track of a file created after a cut caught its directory growing (`_unhide`
repairs that); `create` and `rename` check that the name is found.

A test hook (`set_hook`) is called before each write, create, update, flush, rename, remove,
mkdir and sync, with what it is and the path (the crash-point enumeration,
tests/mpy/crash_points.py, checks the card as it is before each of them).
"""

import os
import struct
from binascii import crc32

from protocol.compat import const

ENOSPC = const(28)  # the unix port's errno module has no ENOSPC; FAT, littlefs and POSIX use 28
_MAGIC = b"\xb5\x1b"
_HEAD = "<2sIII"  # magic, generation, length, CRC-32 over generation, length and data
_HEAD_SIZE = const(14)
_SLOTS = (".a", ".b")

_hook = None  # called as _hook(kind, path) before each write-side operation (tests only)
_on_full = None  # called on ENOSPC; returns True if it freed room worth a second try
_gens: dict = {}  # path -> generation of the newest copy written or read since boot


def set_hook(fn) -> None:
    global _hook
    _hook = fn


def set_full_handler(fn) -> None:
    global _on_full
    _on_full = fn


def is_full(exc) -> bool:
    return isinstance(exc, OSError) and exc.errno == ENOSPC


def _op(kind: str, path: str) -> None:
    if _hook is not None:
        _hook(kind, path)


# -- the operations ------------------------------------------------------------------------------
def create(path: str):
    """Open a file for writing from empty (created, or truncated)."""
    _op("create", path)
    f = open(path, "wb")
    if not exists(path):
        _unhide(path)
    return f


def _unhide(path: str) -> None:
    """FAT: a cut while a directory grew (FatFs links the new cluster, then zeroes it) leaves
    stale bytes in it, and an entry FatFs later places behind them lies past an end-of-
    directory mark (a zero first byte): written, but never listed or found. Short names fill
    the free entries in front, up to and over that mark; removed again, their entries read as
    deleted, no longer as the end, and the file is found."""
    at = path.rfind("/")
    pads: list = []
    while not exists(path) and len(pads) < 512:
        pad = "%s/pad%d" % (path[:at], len(pads))  # an 8.3 name: one directory entry
        _op("create", pad)
        open(pad, "wb").close()
        pads.append(pad)
    for pad in pads:
        remove(pad)


def write(f, data) -> None:
    _op("write", "")
    f.write(data)


def flush(f) -> None:
    """Make what was written to `f` durable (littlefs and FAT commit the file here)."""
    _op("flush", "")
    f.flush()


def rename(old: str, new: str) -> None:
    _op("rename", new)
    os.rename(old, new)
    if not exists(new):
        _unhide(new)


def remove(path: str) -> None:
    """Remove a file if it is there."""
    _op("remove", path)
    try:
        os.remove(path)
    except OSError:
        pass


def mkdir(path: str) -> None:
    _op("mkdir", path)
    os.mkdir(path)


def sync() -> None:
    """Flush the file system's caches to the card where the port can (os.sync on boards)."""
    _op("sync", "")
    fn = getattr(os, "sync", None)
    if fn is not None:
        fn()


def exists(path: str) -> bool:
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def size(path: str) -> int:
    """A file's size in bytes; -1 if it is not there."""
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def makedirs(path: str) -> None:
    parts = path.split("/")
    for i in range(1, len(parts) + 1):
        sub = "/".join(parts[:i])
        if sub and not exists(sub):
            mkdir(sub)


def _put(path: str, offset: int, head, data) -> None:
    """Write head + data at `offset` of a file; 0: a file from empty, -1: the same, removed
    again if the write fails (never a partly written file under its name)."""
    if offset > 0:
        _op("update", path)
        f = open(path, "r+b")
        f.seek(offset)
    else:
        f = create(path)
    try:
        if head:
            write(f, head)
        write(f, data)
        f.close()
    except OSError:
        f.close()
        if offset < 0:
            remove(path)
        raise
    sync()


def _retry(path: str, offset: int, head, data) -> None:
    """_put, once more after the full-card handler freed room if the card was full."""
    try:
        _put(path, offset, head, data)
        return
    except OSError as exc:
        if not is_full(exc) or _on_full is None or not _on_full():
            raise
    _put(path, offset, head, data)


def write_once(path: str, data) -> None:
    """Write a file that is never rewritten; a cut leaves it absent or empty."""
    _retry(path, -1, b"", data)


def put_at(path: str, offset: int, data) -> None:
    """Write `data` at `offset` of a file (a new file at 0), over what a cut left there: a
    log of fixed-size slots that carry their own checks."""
    _retry(path, offset, b"", data)


# -- small files that change ----------------------------------------------------------------------
def _header(gen: int, data) -> bytes:
    crc = crc32(data, crc32(struct.pack("<II", gen, len(data))))
    return struct.pack(_HEAD, _MAGIC, gen, len(data), crc)


def _read_slot(path: str):
    """(generation, data) of one copy, or (0, None) if it is missing, torn or damaged."""
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD_SIZE)
            if len(head) != _HEAD_SIZE:
                return 0, None
            magic, gen, n, crc = struct.unpack(_HEAD, head)
            data = f.read(n) if magic == _MAGIC and n < (1 << 20) else b""
    except OSError:
        return 0, None
    if magic != _MAGIC or len(data) != n or _header(gen, data)[10:] != head[10:]:
        return 0, None
    return gen, data


def _newest(path: str):
    best_gen, best = 0, None
    for ext in _SLOTS:
        gen, data = _read_slot(path + ext)
        if data is not None and gen > best_gen:
            best_gen, best = gen, data
    _gens[path] = best_gen
    return best_gen, best


def write_atomic(path: str, data) -> None:
    """Replace the content of a small file: a cut leaves the old content or the new."""
    gen = _gens.get(path)
    if gen is None:
        gen = _newest(path)[0]
    gen += 1
    _retry(path + _SLOTS[gen & 1], 0, _header(gen, data), data)
    _gens[path] = gen


def read(path: str) -> bytes:
    """The content `write_atomic` (or `write_once`) last completed at `path`; OSError if none."""
    data = _newest(path)[1]
    if data is not None:
        return data
    with open(path, "rb") as f:  # written once (or by firmware before the two copies)
        return f.read()
