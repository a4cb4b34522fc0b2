"""The wire fuzzer (tests/hil/fuzz_wire.py) at CI size; tools/fuzz_recorder.py runs 100 000."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tools import load_tool

pytestmark = pytest.mark.simulator


def test_a_recording_recorder_survives_hostile_requests_and_loses_nothing(
        tmp_path: Path) -> None:
    tool = load_tool("fuzz_recorder")
    result = tool.run(3000, seed=7, work=tmp_path)
    assert result["checks"] == {name: True for name in result["checks"]}, result
    assert result["certified_sessions"] >= 3  # 3000 requests: blocks of 500, every other one
    assert result["answers"].get("unauthorized", 0) > 0
