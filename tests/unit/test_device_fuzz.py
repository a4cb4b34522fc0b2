"""The device's decoders fuzzed inside the real MicroPython unix port (tests/mpy/fuzz_device.py).

Bounded iterations under a 256 KB heap, with a timeout: no crash, no hang, no error type but
the documented ones, and no heap growth over the loop.
"""

import pytest

from tests.micropython_runner import run_micropython


@pytest.mark.parametrize("seed", [1, 2])
def test_device_decoders_survive_fuzzing_under_micropython(seed: int) -> None:
    result = run_micropython("tests/mpy/fuzz_device.py", "6000", str(seed), heapsize="256k",
                             timeout=60)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "FUZZ OK" in result.stdout
    assert "FAIL" not in result.stdout
