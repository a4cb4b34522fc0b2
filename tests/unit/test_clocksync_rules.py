"""The dock's clock measurement (host_agent/dock/clocksync.py), one rule per test: offset and
delay of an NTP-style exchange, the bound it states, and which sample of a burst is kept."""

from __future__ import annotations

import time

import pytest

from host_agent.dock.clocksync import Sample, SyncResult, best, host_now_us


def test_offset_is_device_minus_host_on_a_symmetric_path() -> None:
    # Host sends at 1000, 100 µs each way, device clock 5000 µs ahead, 20 µs to answer.
    s = Sample(t1=1000, t2=1100 + 5000, t3=1120 + 5000, t4=1220)
    assert s.offset_us == 5000


def test_offset_of_a_device_behind_the_host_is_negative() -> None:
    s = Sample(t1=1000, t2=1100 - 7000, t3=1120 - 7000, t4=1220)
    assert s.offset_us == -7000


def test_delay_is_the_round_trip_less_the_device_s_turnaround() -> None:
    s = Sample(t1=1000, t2=9100, t3=9120, t4=1220)
    assert s.delay_us == 200


def test_a_negative_delay_from_clock_resolution_counts_as_zero() -> None:
    s = Sample(t1=1000, t2=5000, t3=5100, t4=1050)  # the device took longer than the trip
    assert s.delay_us == 0


def test_the_bound_is_half_the_delay_rounded_up_plus_a_microsecond() -> None:
    assert [Sample(0, 0, 0, d).bound_us for d in (0, 1, 2, 3, 200)] == [1, 2, 2, 3, 101]


def test_the_bound_holds_whatever_the_path_asymmetry() -> None:
    true_offset = 3000
    for up in range(0, 201, 25):  # the trip out takes `up` of the 200 µs, back the rest
        s = Sample(t1=0, t2=up + true_offset, t3=up + true_offset, t4=200)
        assert abs(s.offset_us - true_offset) <= s.bound_us


def test_of_a_burst_the_lowest_delay_sample_is_kept() -> None:
    slow = Sample(t1=0, t2=400, t3=400, t4=900)
    fast = Sample(t1=0, t2=100, t3=100, t4=150)
    middle = Sample(t1=0, t2=200, t3=200, t4=400)
    assert best([slow, fast, middle]) is fast


def test_an_empty_burst_is_an_error() -> None:
    with pytest.raises(ValueError, match="no clock samples"):
        best([])


def test_host_time_is_wall_clock_microseconds() -> None:
    assert abs(host_now_us() - time.time() * 1e6) < 1e6


def test_a_sync_result_names_the_signed_event_only_when_given() -> None:
    assert SyncResult(1, 2, 3, 4, 5, 6).event == 0


def test_a_sample_and_a_result_cannot_be_changed_once_measured() -> None:
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        Sample(1, 2, 3, 4).t1 = 0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        SyncResult(1, 2, 3, 4, 5, 6).stepped_us = 0  # type: ignore[misc]
