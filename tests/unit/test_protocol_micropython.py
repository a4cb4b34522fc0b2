"""The same protocol vectors pass inside the real MicroPython unix port."""

from tests.micropython_runner import run_micropython


def test_protocol_vectors_under_micropython():
    result = run_micropython("tests/mpy/check_protocol.py", heapsize="256k")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ALL OK" in result.stdout
    assert "FAIL" not in result.stdout
