"""No policy rollback: a recorder adopts a policy only if it is newer than every policy it has
held, whatever its id; each refusal is a signed `policy_rejected` event the vault holds.
(A reboot keeping what was held, and older firmware's cards: tests/mpy/check_device_rules.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from host_agent.dock.session import DeviceError, dock
from host_agent.keys import UnitKey
from host_agent.vault import timeline
from protocol import policy
from tests.hil.conftest import docked, lab

LIVE = dict(segments=0, segment_ms=400, bitrate=1_000_000)


def signed(unit: UnitKey, pid: str, version: int) -> bytes:
    doc = policy.annex()
    doc["id"], doc["version"] = pid, version
    doc["thresholds"]["main_floor_pct"] = 10 + version  # each a different document
    return policy.sign(doc, unit.kid, unit.sign)


@pytest.mark.simulator
def test_an_older_policy_or_another_id_not_newer_is_refused_on_the_signed_chain(
        tmp_path: Path) -> None:
    unit, _ = lab(tmp_path)
    with docked(tmp_path, **LIVE) as (rec, session):
        rec.wait_for("ready for the dock")
        first = dock(session, policy_file=signed(unit, "gx-water-2019", 3))
        assert first.policy == {"adopted": "gx-water-2019/3"}
        for pid, version in (("gx-water-2019", 2), ("detachment-rules", 2),
                             ("detachment-rules", 3)):
            with pytest.raises(DeviceError, match="not newer"):
                session.push_policy(signed(unit, pid, version))
            assert session.request("get_status")["policy"] == "gx-water-2019/3"
        assert session.push_policy(signed(unit, "detachment-rules", 4)) == "detachment-rules/4"
        dock(session)
        recs = timeline.load_records(session.vault, first.device_id)
    events = [r for r in recs if r["kind"] == "event"
              and r["event"] in ("policy_adopted", "policy_rejected")]
    assert [e["event"] for e in events] == ["policy_adopted"] + ["policy_rejected"] * 3 + [
        "policy_adopted"]
    assert all("not newer" in e["detail"]["reason"] for e in events[1:4])
    assert events[-1]["detail"] == {"policy": "detachment-rules/4"}
