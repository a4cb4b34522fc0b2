"""The record store's rules, one check at a time, on real littlefs and FAT (block devices in
RAM) inside MicroPython: stray names, receipts at the keep boundary and across reboots,
finishing a release or a repair at boot, the spare (tests/mpy/check_store_rules.py)."""

from tests.micropython_runner import run_micropython


def test_store_rules_inside_micropython() -> None:
    result = run_micropython("tests/mpy/check_store_rules.py", heapsize="16m", timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "ALL OK" in result.stdout
    assert "FAIL" not in result.stdout
