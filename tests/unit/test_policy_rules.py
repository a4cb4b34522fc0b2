"""The unit policy's rules (protocol/policy.py), one per test: its format, the numbers the
recorder and the dock enforce and their ranges, what a well-formed document needs, and how
revoked docks are named. The recorder's side (no rollback) is tests/mpy/check_device_rules.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from protocol import policy


def doc(**changes: Any) -> dict[str, Any]:
    d = policy.annex()
    d["version"] = 2
    d.update(changes)
    return d


def refused(d: Any, why: str) -> None:
    with pytest.raises(policy.PolicyError, match=why):
        policy.check(d)


def test_the_policy_format_is_1() -> None:
    assert policy.annex()["v"] == policy.POLICY_FORMAT == 1
    refused(doc(v=2), "format 1")


def test_the_default_thresholds_are_the_unit_numbers() -> None:
    assert policy.DEFAULT_THRESHOLDS == {
        "pre_event_s": 30, "main_floor_pct": 20, "storage_reserve_mb": 2048,
        "duty_main_pct": 80, "backup_floor_pct": 50, "duty_storage_free_pct": 20,
        "duty_clock_error_us": 10000}


RANGES = {"pre_event_s": (0, 120), "main_floor_pct": (0, 100),
          "storage_reserve_mb": (0, 1 << 20), "duty_main_pct": (0, 100),
          "backup_floor_pct": (0, 100), "duty_storage_free_pct": (0, 100),
          "duty_clock_error_us": (1, 60_000_000)}


@pytest.mark.parametrize("key", sorted(RANGES))
def test_each_threshold_takes_its_range_and_nothing_outside(key: str) -> None:
    lo, hi = RANGES[key]
    for value in (lo, hi):
        d = doc()
        d["thresholds"][key] = value
        assert policy.check(d) is d
    for value in (lo - 1, hi + 1):
        d = doc()
        d["thresholds"][key] = value
        refused(d, f"threshold {key} must be within {lo}..{hi}")


def test_the_version_is_1_to_2_to_the_31() -> None:
    assert policy.check(doc(version=1 << 31))
    refused(doc(version=(1 << 31) + 1), "version must be a positive integer")
    refused(doc(version=0), "version must be a positive integer")


@pytest.mark.parametrize("key", ["id", "unit"])
def test_an_empty_id_or_unit_is_refused(key: str) -> None:
    refused(doc(**{key: ""}), f"needs a {key}")


def test_no_rows_is_refused() -> None:
    refused(doc(rows=[]), "has no rows")


def test_a_row_that_is_no_map_is_refused() -> None:
    refused(doc(rows=[[4, "penalty"]]), "every row needs a number")


@pytest.mark.parametrize("key", ["matter", "stage", "records", "start", "end", "recorder"])
def test_a_row_with_an_empty_field_is_refused(key: str) -> None:
    d = doc()
    d["rows"][3][key] = ""
    refused(d, f"row 4 lacks {key}")


def test_revoked_docks_are_a_list_of_at_most_32() -> None:
    kids = [f"{i:032x}" for i in range(33)]
    assert policy.check(doc(revoked_docks=kids[:32]))
    refused(doc(revoked_docks=kids), "at most 32")
    refused(doc(revoked_docks="0" * 32), "must be a list")


@pytest.mark.parametrize("kid", [0x1234, "0" * 31, "0" * 33, "g" * 32, "A" * 32])
def test_a_revoked_dock_is_named_by_32_lowercase_hex_digits(kid: Any) -> None:
    refused(doc(revoked_docks=[kid]), "is not a dock key id")


def test_a_revoked_dock_key_id_is_taken() -> None:
    assert policy.check(doc(revoked_docks=["0123456789abcdef" * 2]))
