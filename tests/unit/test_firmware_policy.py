"""The unit policy's approved firmware: an optional list, checked like every other field, and a
dock that will not release for duty a recorder running a version the unit has not approved."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from host_agent.dock.clocksync import SyncResult
from host_agent.dock.readiness import Thresholds, assess
from host_agent.keys import verify
from host_agent.vault.evidence import key_id
from protocol import policy

SYNCED = SyncResult(1_500_000, 900, 40, 600, -1_500_000, 32)


def status(**changes: Any) -> dict[str, Any]:
    """A recorder fit for duty in every other respect."""
    return {"battery_main": {"mv": 4100, "pct": 96, "charging": True},
            "battery_backup": {"mv": 2900, "pct": 88, "charging": False},
            "storage": {"free": 30 << 30, "total": 32 << 30},
            "clock": {"state": "synced"}, "health": {"faults": [], "foreign": []},
            "pending": 0, "policy": "gx-water-2019/2", "recording": False, **changes}


def approving(*versions: str) -> dict[str, Any]:
    doc = policy.annex()
    doc["version"] = 2
    doc["approved_firmware"] = list(versions)
    return doc


def test_older_policies_without_the_list_approve_any_firmware() -> None:
    doc = policy.check(policy.annex())
    assert "approved_firmware" not in doc
    th = Thresholds.from_policy(doc)
    assert th.approved_firmware is None
    assert Thresholds.from_policy(None).approved_firmware is None
    for fw in ("0.1.0", "anything", None):
        assert assess(status(), SYNCED, th, firmware=fw).ready
    assert assess(status(), SYNCED, th).ready  # a caller that does not say: as before


def test_a_listed_version_is_released_and_any_other_is_not() -> None:
    th = Thresholds.from_policy(policy.check(approving("0.1.0", "0.2.0-rc1")))
    assert th.approved_firmware == ("0.1.0", "0.2.0-rc1")
    assert assess(status(), SYNCED, th, firmware="0.2.0-rc1").ready
    r = assess(status(), SYNCED, th, firmware="0.0.9")
    assert not r.ready
    assert r.reasons == ["firmware 0.0.9 is not approved by the unit policy"
                         " (approved: 0.1.0, 0.2.0-rc1)"]
    unknown = assess(status(), SYNCED, th)  # a version nobody reported is not an approved one
    assert not unknown.ready and "firmware version unknown" in unknown.reasons[0]


def test_the_firmware_reason_comes_with_the_others() -> None:
    th = Thresholds.from_policy(approving("0.1.0"))
    r = assess(status(pending=2, battery_main={"mv": 3500, "pct": 30, "charging": False}),
               SYNCED, th, firmware="0.0.1")
    assert len(r.reasons) == 3
    assert r.reasons[-1].startswith("firmware 0.0.1 is not approved")


@pytest.mark.parametrize("value, why", [
    ([], "1 to 16 firmware versions"),
    ("0.1.0", "1 to 16 firmware versions"),
    ([f"1.{i}" for i in range(17)], "1 to 16 firmware versions"),
    ([1], "is not a firmware version"),
    ([""], "is not a firmware version"),
    (["0.1.0 beta"], "is not a firmware version"),
    (["x" * 33], "is not a firmware version"),
    (["0.1.0\n"], "is not a firmware version"),
])
def test_a_malformed_list_is_refused(value: Any, why: str) -> None:
    doc = approving()
    doc["approved_firmware"] = value
    with pytest.raises(policy.PolicyError, match=why):
        policy.check(doc)


def test_the_list_travels_in_the_signed_policy() -> None:
    unit = Ed25519PrivateKey.generate()
    public = unit.public_key().public_bytes_raw()
    signed = policy.sign(approving("0.1.0"), key_id(public), unit.sign)
    assert policy.read_signed(signed)["approved_firmware"] == ["0.1.0"]

    doc = policy.open_signed(signed, public, verify)
    assert Thresholds.from_policy(doc).approved_firmware == ("0.1.0",)
