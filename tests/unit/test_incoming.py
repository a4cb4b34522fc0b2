"""Tests for host_agent.vault.Incoming: a segment received through its writer thread."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
from pathlib import Path

import pytest

from host_agent.vault import Incoming, Vault, VaultError
from host_agent.vault import files as files_mod
from tests.factories import RecordChain


def test_bytes_hash_and_size_match_across_batches(tmp_path: Path) -> None:
    data = os.urandom(3 * Incoming.BATCH + 12345)
    with Incoming(tmp_path / "seg.part") as inc:
        for i in range(0, len(data), 32768):
            inc.write(memoryview(data)[i : i + 32768])
            assert inc.size == min(i + 32768, len(data))
        assert inc.sha256 == hashlib.sha256(data).digest()  # also before the last batch left
        inc.seal()
        assert inc.sha256 == hashlib.sha256(data).digest()
        assert (tmp_path / "seg.part").read_bytes() == data
        assert stat.S_IMODE((tmp_path / "seg.part").stat().st_mode) == files_mod.READ_ONLY
        with pytest.raises(VaultError):
            inc.write(b"more")
        inc.move_to(tmp_path / "seg.bin")  # as the vault does when it stores it
    assert (tmp_path / "seg.bin").read_bytes() == data
    assert not (tmp_path / "seg.part").exists()


def test_caller_may_reuse_its_buffer_at_once(tmp_path: Path) -> None:
    buf = bytearray(32768)
    expect = hashlib.sha256()
    with Incoming(tmp_path / "seg.part") as inc:
        for i in range(40):  # > BATCH: the writer thread is in use
            buf[:] = bytes([i]) * len(buf)
            inc.write(buf)
            expect.update(buf)
        inc.seal()
        assert inc.sha256 == expect.digest()
        assert hashlib.sha256((tmp_path / "seg.part").read_bytes()).digest() == expect.digest()


def test_discard_removes_the_file_and_stops_the_writer(tmp_path: Path) -> None:
    before = threading.active_count()
    inc = Incoming(tmp_path / "seg.part")
    inc.write(os.urandom(2 * Incoming.BATCH))
    inc.discard()
    assert not (tmp_path / "seg.part").exists()
    assert threading.active_count() == before
    inc.discard()  # idempotent


def test_a_write_error_in_the_writer_reaches_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int, data: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files_mod, "_write_all", full)
    with Incoming(tmp_path / "seg.part") as inc, pytest.raises(OSError) as info:
        for _ in range(4 * (Incoming.BATCH // 32768) * Incoming.DEPTH):
            inc.write(bytes(32768))  # never blocks for good on a dead writer
        inc.seal()
    assert info.value.errno == errno.ENOSPC
    assert not (tmp_path / "seg.part").exists()


def test_a_write_error_fails_the_commit_and_stores_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain = RecordChain("SIM-INC", seed=b"incoming")
    data = os.urandom(2 * Incoming.BATCH + 1)
    record, _ = chain.next_segment(data)
    real = files_mod._write_all
    calls = []

    def flaky(fd: int, buf: bytes | bytearray) -> None:
        calls.append(len(buf))
        if len(calls) == 2:
            raise OSError(errno.EIO, "I/O error")
        real(fd, buf)

    monkeypatch.setattr(files_mod, "_write_all", flaky)
    with Vault.open(tmp_path / "vault") as vault:
        vault.enroll(chain.device_id, chain.public_key, by="test")
        intake = vault.intake(chain.device_id)
        plan = intake.examine(1, record, len(data))
        with vault.incoming() as inc:
            for i in range(0, len(data), 32768):
                inc.write(data[i : i + 32768])
            assert inc.sha256 == hashlib.sha256(data).digest()  # covers what was handed over
            with pytest.raises(OSError):
                intake.conclude(plan, inc)
        assert vault.head(chain.device_id)[0] == 0
        assert all(p.is_dir() for p in (vault.root / "objects").rglob("*"))
        assert not list((vault.root / "tmp").iterdir())

