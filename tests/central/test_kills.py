"""A quick set of the kill campaign (tools/central_campaign.py runs ≥ 50): the forwarder or
the central killed (SIGKILL) at random points while two docks forward and keep storing;
then everything is forwarded, and nothing is lost, kept twice or flagged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.tools import load_tool

central_campaign = load_tool("central_campaign")


def test_kills_lose_and_duplicate_nothing(ceph: Any, postgres: Any, tmp_path: Path) -> None:
    c = central_campaign.Campaign(tmp_path, ceph, postgres, docks=2, seed=7)
    try:
        for _ in range(8):
            c.trial()
        out = c.finish()
    finally:
        c.close()
    assert out["kills"]["central"] >= 1 and sum(out["kills"].values()) >= 2, out
    assert out["records"] > 0 and out["lost"] == 0 and out["duplicated"] == 0, out
    assert out["unexpected"] == 0 and out["objects_twice"] == 0 and out["flagged"] == [], out
    assert out["docks_cosigned"] == out["docks_verified"] == 2, out
