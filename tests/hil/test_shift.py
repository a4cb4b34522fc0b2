"""A short shift (tools/shift.py) inside a board's heap: the whole firmware — recording,
mandated phases, refusals, signing, two dockings — under `micropython -X heapsize=256k`, with
its data heap (what it holds beyond its imported bytecode and module state) measured on the
device by the board's heap probe."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tools import load_tool

DATA_HEAP_BOUND = 128 * 1024  # bytes: what a board's RAM holds beside the firmware in flash

pytestmark = pytest.mark.simulator


def test_a_shift_runs_in_a_256k_heap_and_docks_every_record(tmp_path: Path) -> None:
    shift = load_tool("shift")
    # One hour at 240x: ~20 s of wall time. run_shift raises on a MemoryError or any other
    # error in the recorder's log, a docking that quarantines or leaves a record, a record
    # left on the recorder at the end, a vault that does not verify, or records in the vault
    # that are not the recorder's chain from 1, each once.
    out = shift.run_shift(tmp_path, hours=1, rate=240, heapsize="256k")
    assert len(out["dockings"]) == 2
    assert out["records"] == sum(d["stored"] for d in out["dockings"])
    assert out["records_by_kind"]["segment"] >= 30 and out["records_by_kind"]["event"] >= 40
    assert out["refusals"] == 8  # pause, mute, a wrong end trigger, stop, pause, pause, ...
    assert out["heapsize"] == "256k" and out["heap_bytes"] < 256 * 1024
    assert 0 < out["live_after_imports"] < out["peak_in_use"] <= out["heap_bytes"]
    assert out["data_heap_peak"] <= DATA_HEAP_BOUND, out
