"""The record store and the recorder on real littlefs and FAT (block devices in RAM) inside
MicroPython: foreign files, receipts, the chain head, two-copy small files, a full card
(tests/mpy/check_store.py)."""

from tests.micropython_runner import run_micropython


def test_store_on_littlefs_and_fat_inside_micropython() -> None:
    result = run_micropython("tests/mpy/check_store.py", heapsize="16m", timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "ALL OK" in result.stdout
    assert "FAIL" not in result.stdout
