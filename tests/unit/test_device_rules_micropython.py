"""The recorder's rules inside MicroPython, one behaviour per check
(tests/mpy/check_device_rules.py): no policy rollback (an older version, another id with a
lower or equal version: refused, each refusal a signed event), releases that free nothing
without a receipt for that very record, and the phase lock (refusals, an end confirmation
without a request or after its deadline)."""

from tests.micropython_runner import run_micropython


def test_device_rules_inside_micropython() -> None:
    result = run_micropython("tests/mpy/check_device_rules.py", heapsize="16m", timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "ALL OK" in result.stdout
    assert "FAIL" not in result.stdout
