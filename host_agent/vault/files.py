"""Durable files: fsync'd writes, directories synced after they change, the segment being
received.

Everything the vault names is durable before it gets its name: data is written and fsynced
under a temporary name, then renamed, then the directory is fsynced. `Incoming` is a segment
arriving from a recorder, hashed as it comes and written by a thread of its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import queue
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from host_agent.vault.errors import VaultError

READ_ONLY = 0o444
CHUNK = 1 << 20


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def mkdir_durable(path: Path) -> None:
    """Create `path` (and missing parents), fsyncing each parent that gained an entry."""
    if path.is_dir():
        return
    mkdir_durable(path.parent)
    with contextlib.suppress(FileExistsError):
        path.mkdir()
    fsync_dir(path.parent)


def hash_file(path: Path) -> tuple[bytes, int]:
    h = hashlib.sha256()
    size = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(view)
            if not n:
                break
            h.update(view[:n])
            size += n
    return h.digest(), size


def write_durable(tmp_dir: Path, dest: Path, data: bytes) -> None:
    """Write `data` to a temp file, make it read-only, fsync, rename onto `dest`."""
    tmp = tmp_dir / (uuid.uuid4().hex + ".part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, READ_ONLY)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, dest)



class Incoming:
    """A segment being received into the vault's tmp/ directory; a context manager.

    Leaving the `with` block without a commit or quarantine removes the temp file.

    `write` copies each piece into a batch; a full batch is hashed in the caller's thread and
    handed through a bounded queue to a writer thread that writes it to the temp file, so
    hashing and writing overlap (both release the GIL). `sha256` and `size` always cover
    every byte passed to `write`; `seal` waits for the writer to finish, then fsyncs as
    before: nothing is durable, nor named, earlier than without the thread. A write error in
    the writer thread (ENOSPC, EIO) is raised by the next `write`, or by `seal`.
    """

    BATCH = 1 << 18  # bytes per write handed to the writer thread
    DEPTH = 8  # batches queued for the writer before `write` blocks (≤ 2 MiB in flight)

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        self._hash = hashlib.sha256()
        # closed by seal()/discard(); mode as open(path, "xb") would give
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        self._batch = bytearray()
        self._queue: queue.Queue[bytearray | None] | None = None
        self._writer: threading.Thread | None = None
        self._error: BaseException | None = None
        self._sealed = False
        self._consumed = False

    @property
    def sha256(self) -> bytes:
        """SHA-256 of the bytes written so far."""
        if not self._batch:
            return self._hash.digest()
        h = self._hash.copy()
        h.update(self._batch)
        return h.digest()

    def write(self, data: bytes | memoryview) -> None:
        if self._sealed:
            raise VaultError("segment transfer already finished")
        if self._error is not None:
            raise self._error
        self._batch += data  # a copy: the caller may reuse its buffer at once
        self.size += len(data)
        if len(self._batch) >= self.BATCH:
            self._hand_over()

    def _hand_over(self) -> None:
        batch, self._batch = self._batch, bytearray()
        self._hash.update(batch)  # releases the GIL: the writer thread writes meanwhile
        if self._queue is None:
            self._queue = queue.Queue(self.DEPTH)
            self._writer = threading.Thread(
                target=self._write_loop, args=(self._queue,), name="vault-incoming", daemon=True
            )
            self._writer.start()
        self._queue.put(batch)

    def _write_loop(self, q: queue.Queue[bytearray | None]) -> None:
        fd = self._fd
        offset = 0
        while True:
            batch = q.get()
            if batch is None:
                return
            if self._error is not None:
                continue  # keep draining so that `write` never blocks on a dead writer
            try:
                _write_all(fd, batch)
                _start_writeback(fd, offset, len(batch))
                offset += len(batch)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                self._error = exc

    def _finish_writer(self) -> None:
        """Stop the writer thread after it wrote everything queued."""
        if self._writer is not None and self._queue is not None:
            self._queue.put(None)
            self._writer.join()
            self._writer = self._queue = None

    def seal(self) -> None:
        """Write what is left, make read-only and fsync; no more writes after this."""
        if self._consumed:
            raise VaultError("segment already committed or quarantined")
        if not self._sealed:
            if self._batch:
                self._hash.update(self._batch)
            self._finish_writer()
            if self._error is not None:
                raise self._error
            if self._batch:
                _write_all(self._fd, self._batch)
                self._batch = bytearray()
            os.fchmod(self._fd, READ_ONLY)
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            self._sealed = True

    def move_to(self, dest: Path) -> None:
        """Seal the segment (durable, read-only) and give it its final name `dest`."""
        self.seal()
        os.replace(self.path, dest)
        self._consumed = True

    def discard(self) -> None:
        """Abandon the transfer: close and remove the temp file (no-op after a commit)."""
        if self._batch and not self._sealed:
            self._hash.update(self._batch)  # keep `sha256` what it was
        self._batch = bytearray()
        self._finish_writer()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._sealed = True
        if not self._consumed:
            self.path.unlink(missing_ok=True)
            self._consumed = True

    def __enter__(self) -> Incoming:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.discard()


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_SYNC_FILE_RANGE = _load_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing [offset, offset+length) of `fd` to disk now, without waiting for it.

    Linux's sync_file_range(SYNC_FILE_RANGE_WRITE): the kernel begins writeback of those
    dirty pages, so the fsync in `Incoming.seal` finds most of the segment on disk already.
    It promises nothing about durability (no metadata, no disk cache flush) and replaces no
    fsync: a hint for speed only, skipped where it does not exist or fails.
    """
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, offset, length, _SYNC_FILE_RANGE_WRITE)

