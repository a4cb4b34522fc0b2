"""The wire fuzzer (tests/hil/fuzz_wire.py) at CI size; tools/fuzz_recorder.py runs 100 000."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.simulator
REPO = Path(__file__).resolve().parents[2]


def test_a_recording_recorder_survives_hostile_requests_and_loses_nothing(
        tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("fuzz_recorder",
                                                  REPO / "tools" / "fuzz_recorder.py")
    assert spec and spec.loader
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    result = tool.run(3000, seed=7, work=tmp_path)
    assert result["checks"] == {name: True for name in result["checks"]}, result
    assert result["certified_sessions"] >= 3  # 3000 requests: blocks of 500, every other one
    assert result["answers"].get("unauthorized", 0) > 0
