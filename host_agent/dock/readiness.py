"""Release for duty (Art. 4): may this recorder go out? Pure rules over its status.

The numbers come from the unit's policy (protocol/policy.py, `DEFAULT_THRESHOLDS` are the
annex's), the same document the recorder runs, so a unit sets them once (Art. 12). So does the
list of firmware versions the unit approves (`approved_firmware`; a policy without it approves
any): a recorder running another version is offloaded like any other, and not released.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from host_agent.dock.clocksync import SyncResult
from protocol import policy


@dataclass(frozen=True)
class Thresholds:
    main_min_pct: int
    backup_min_pct: int
    storage_min_free_pct: int
    clock_max_error_us: int
    approved_firmware: tuple[str, ...] | None = None  # None: any version may go on duty

    @classmethod
    def from_policy(cls, doc: dict[str, Any] | None = None) -> Thresholds:
        """The duty thresholds of a policy document (the annex's when None)."""
        doc = doc or policy.annex()
        th = doc["thresholds"]
        approved = doc.get("approved_firmware")
        return cls(th["duty_main_pct"], th["backup_floor_pct"], th["duty_storage_free_pct"],
                   th["duty_clock_error_us"],
                   None if approved is None else tuple(str(fw) for fw in approved))


@dataclass
class Readiness:
    ready: bool
    reasons: list[str]
    status: dict[str, Any]


def assess(status: dict[str, Any], sync: SyncResult | None, th: Thresholds,
           firmware: str | None = None) -> Readiness:
    """Every reason this recorder may not go on duty; ready when there is none. `firmware` is
    the version the recorder reported (`identify`); unknown, it is not approved when the policy
    lists approved versions."""
    reasons = []
    main, backup, storage = status["battery_main"], status["battery_backup"], status["storage"]
    if main["pct"] < th.main_min_pct:
        reasons.append(f"main battery {main['pct']}% < {th.main_min_pct}%")
    if backup["pct"] < th.backup_min_pct:
        reasons.append(f"backup battery {backup['pct']}% < {th.backup_min_pct}%")
    free_pct = 100 * storage["free"] // max(1, storage["total"])
    if free_pct < th.storage_min_free_pct:
        reasons.append(f"storage {free_pct}% free < {th.storage_min_free_pct}%")
    health = status["health"]
    faults = health.get("faults", [])
    if faults:
        reasons.append("self-test faults: " + ", ".join(str(f) for f in faults))
    if health.get("storage_full"):
        reasons.append("the card filled up during a phase (a storage_full gap is on record)")

    if sync is None:
        reasons.append("clock not synced")
    elif abs(sync.offset_after_us) + sync.bound_after_us > th.clock_max_error_us:
        reasons.append(
            f"clock error up to {abs(sync.offset_after_us) + sync.bound_after_us} us "
            f"> {th.clock_max_error_us} us"
        )
    if status["pending"]:
        reasons.append(f"{status['pending']} records still on the device")
    if status["recording"]:
        reasons.append("the recorder is recording")
    if th.approved_firmware is not None and firmware not in th.approved_firmware:
        approved = ", ".join(th.approved_firmware)
        reasons.append(f"firmware {firmware} is not approved by the unit policy"
                       f" (approved: {approved})" if firmware is not None else
                       f"firmware version unknown; the unit policy approves only {approved}")
    return Readiness(not reasons, reasons, status)
