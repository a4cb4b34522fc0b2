"""The annex as policy data: complete, never loosened, adopted only with the unit's signature."""

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from host_agent.vault.evidence import key_id
from protocol import cbor, cose, policy
from protocol.ed25519 import verify


def test_the_default_policy_is_the_annex():
    doc = policy.check(policy.annex())
    assert [r["no"] for r in doc["rows"]] == list(range(1, 16))
    assert {r["no"] for r in doc["rows"] if r["recorder"] == "hall_cctv"} == {1, 2}
    assert all(r["continuous"] for r in doc["rows"])
    assert policy.row(doc, 7)["end"] == "signature completed"
    assert policy.row(doc, 13)["end"] == "party's signature"
    assert policy.name(doc) == "gx-water-2019/1"


@pytest.mark.parametrize(
    "mutate, why",
    [
        (lambda d: d["rows"].pop(3), "row 4 of the annex is missing"),
        (lambda d: policy.row(d, 8).update(continuous=False), "row 8 must stay a continuous"),
        (lambda d: policy.row(d, 3).update(recorder="hall_cctv"), "row 3 must stay"),
        (lambda d: d["thresholds"].update(pre_event_s=121), "pre_event_s must be within"),
        (lambda d: d["thresholds"].pop("storage_reserve_mb"), "storage_reserve_mb"),
        (lambda d: d["rows"].append(dict(d["rows"][0])), "row 1 appears twice"),
        (lambda d: d.update(version=0), "version"),
    ],
)
def test_a_refinement_may_not_loosen_the_annex(mutate, why):
    doc = policy.annex()
    mutate(doc)
    with pytest.raises(policy.PolicyError, match=why):
        policy.check(doc)


def test_tightening_and_adding_rows_is_allowed():
    doc = policy.annex()
    doc["version"] = 2
    policy.row(doc, 1)["recorder"] = "recorder"  # a unit may put hall rows on body cameras
    doc["thresholds"]["pre_event_s"] = 120
    doc["rows"].append({"no": 16, "matter": "inspection", "stage": "patrol", "records": "patrol",
                        "start": "patrol starts", "end": "patrol ends",
                        "recorder": "recorder", "continuous": True})
    assert policy.check(doc) is doc


def test_signed_policy_opens_only_with_the_unit_key():
    unit = Ed25519PrivateKey.generate()
    public = unit.public_key().public_bytes_raw()
    signed = policy.sign(policy.annex(), key_id(public), unit.sign)
    assert policy.open_signed(signed, public, verify) == policy.annex()
    other = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    with pytest.raises(policy.PolicyError, match="does not verify"):
        policy.open_signed(signed, other, verify)
    with pytest.raises(policy.PolicyError, match="not a signed policy"):
        policy.open_signed(cbor.encode(policy.annex()), public, verify)
    loose = policy.annex()
    policy.row(loose, 5)["continuous"] = False
    forged = cose.sign1(cbor.encode(loose), key_id(public), unit.sign)
    with pytest.raises(policy.PolicyError, match="row 5"):
        policy.open_signed(forged, public, verify)
