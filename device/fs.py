"""Small files on the recorder's card, written so that a power cut at any instant leaves the old
content or the new, never a mix and never nothing.

`write_atomic(path, data)` writes `path.tmp`, closes it, renames it to `path.new`, then renames
`path.new` onto `path`. Boards differ in that last rename: littlefs and POSIX replace the
target atomically, but FAT (MicroPython's VfsFat) removes the target first and then renames,
so a cut in between leaves no `path` at all. `read(path)` therefore takes `path.new` when it
exists (it is complete: it only gets that name after it was written and closed), else `path`;
a `path.tmp` may be half written and is never read. `settle(path)` finishes a replacement a cut
interrupted; `write_atomic` does it first, so an interrupted newer content is never
replaced by going back to the one before it.
"""

import os

_NEW = ".new"
_TMP = ".tmp"


def exists(path: str) -> bool:
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def makedirs(path: str) -> None:
    parts = path.split("/")
    for i in range(1, len(parts) + 1):
        sub = "/".join(parts[:i])
        if sub and not exists(sub):
            os.mkdir(sub)


def remove(path: str) -> None:
    """Remove a file if it is there."""
    try:
        os.remove(path)
    except OSError:
        pass


def sync() -> None:
    """Flush the file system's caches to the card where the port can (os.sync on boards)."""
    fn = getattr(os, "sync", None)
    if fn is not None:
        fn()


def write_atomic(path: str, data) -> None:
    settle(path)  # a newer content left by a cut must not be lost to an older one
    tmp = path + _TMP
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path + _NEW)
    os.rename(path + _NEW, path)
    sync()


def read(path: str) -> bytes:
    """The content `write_atomic` last completed at `path`; OSError if there is none."""
    try:
        with open(path + _NEW, "rb") as f:
            return f.read()
    except OSError:
        pass
    with open(path, "rb") as f:
        return f.read()


def settle(path: str) -> None:
    """Finish a replacement that a power cut interrupted; drop a half-written temp file."""
    if exists(path + _NEW):
        os.rename(path + _NEW, path)
    remove(path + _TMP)
