"""The annex as data: which enforcement phases must be recorded without interruption.

The default policy is the annex of 桂水政法〔2019〕13号 (15 rows). A unit may refine it (Art. 12):
add rows, tighten rows, and set thresholds. A refined policy travels as a COSE_Sign1 signed by
the unit's key; the device adopts it only after checking that signature against the unit key it
was commissioned with, that its version is newer, and that it keeps every mandated row.

Policy document (CBOR map):
  id, version        the name in every record's "policy" field is "<id>/<version>"
  unit               who issued it
  rows               list of {no, matter, stage, records, start, end, recorder, continuous}
                     recorder is "recorder" (body-worn) or "hall_cctv"
  thresholds         DEFAULT_THRESHOLDS' keys: what the recorder and the dock enforce
  revoked_docks      (optional) key ids (32 hex digits) of dock keys the unit has revoked: a
                     recorder that runs this policy refuses those docks
  approved_firmware  (optional) the firmware versions (the "fw" of `identify` and of every
                     record) the dock may release for duty; a recorder running another one is
                     still offloaded, never released. Absent: any version (older policies)
"""

from protocol import cbor, cose
from protocol.compat import const

POLICY_FORMAT = const(1)
MAX_PRE_EVENT_S = const(120)
MAX_REVOKED = const(32)  # a signed policy must fit one dock request
MAX_APPROVED_FW = const(16)  # approved firmware versions, each 1..MAX_FW_LEN characters
MAX_FW_LEN = const(32)

# (no, matter, stage, what is recorded, start trigger, end trigger, recorder)
_ANNEX = (
    (1, "licensing", "acceptance", "acceptance", "materials handed in", "acceptance ends",
     "hall_cctv"),
    (2, "licensing", "service", "service", "decision delivered", "service ends", "hall_cctv"),
    (3, "licensing", "on-site survey", "survey", "survey starts", "survey ends", "recorder"),
    (4, "penalty", "on-site investigation", "investigation", "investigation starts",
     "investigation ends", "recorder"),
    (5, "penalty", "interview record", "questioning", "questioning starts", "questioning ends",
     "recorder"),
    (6, "penalty", "hearing", "penalty hearing", "hearing starts", "hearing ends", "recorder"),
    (7, "penalty", "service", "on-site service", "arrival at place of service",
     "signature completed", "recorder"),
    (8, "coercion", "seizure", "seizure", "arrival at seizure place", "signature completed",
     "recorder"),
    (9, "coercion", "on-site survey", "investigation", "investigation starts",
     "investigation ends", "recorder"),
    (10, "coercion", "interview record", "questioning", "questioning starts",
     "questioning ends", "recorder"),
    (11, "coercion", "hearing", "penalty hearing", "hearing starts", "hearing ends",
     "recorder"),
    (12, "coercion", "enforcement on site", "coercion", "arrival at enforcement site",
     "coercion ends", "recorder"),
    (13, "coercion", "service", "on-site service of documents", "arrival at place of service",
     "party's signature", "recorder"),
    (14, "levy", "on-site verification", "verification", "verification starts",
     "verification ends", "recorder"),
    (15, "inspection", "on-site inspection", "inspection", "inspection starts",
     "inspection ends", "recorder"),
)

# The unit's numbers (Art. 12), read by the recorder and the dock alike.
DEFAULT_THRESHOLDS = {
    "pre_event_s": 30,  # recorder: pre-event buffer kept in standby
    "main_floor_pct": 20,  # recorder: below this it warns; a phase started below is an override
    "storage_reserve_mb": 2048,  # recorder: kept free for mandated phases
    # The dock releases a recorder for duty (Art. 4) only when all of these hold:
    "duty_main_pct": 80,  # main battery at least this
    "backup_floor_pct": 50,  # backup (clock) cell at least this
    "duty_storage_free_pct": 20,  # this much of the card free
    "duty_clock_error_us": 10000,  # clock within this of the dock's after the sync
}
_LIMITS = (("pre_event_s", 0, MAX_PRE_EVENT_S), ("main_floor_pct", 0, 100),
           ("storage_reserve_mb", 0, 1 << 20), ("duty_main_pct", 0, 100),
           ("backup_floor_pct", 0, 100), ("duty_storage_free_pct", 0, 100),
           ("duty_clock_error_us", 1, 60000000))


class PolicyError(ValueError):
    """A policy that must not be adopted; the message says why."""


def annex() -> dict:
    """The default policy: the annex exactly, every row "whole" (continuous)."""
    rows = []
    for no, matter, stage, records, start, end, recorder in _ANNEX:
        rows.append({"no": no, "matter": matter, "stage": stage, "records": records,
                     "start": start, "end": end, "recorder": recorder, "continuous": True})
    return {"v": POLICY_FORMAT, "id": "gx-water-2019", "version": 1,
            "unit": "Guangxi Water Resources Department", "rows": rows,
            "thresholds": dict(DEFAULT_THRESHOLDS)}


def name(policy: dict) -> str:
    return "%s/%d" % (policy["id"], policy["version"])


def row(policy: dict, no: int):
    for r in policy["rows"]:
        if r["no"] == no:
            return r
    return None


def _int_in(value, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def check(policy) -> dict:
    """Return `policy` if well formed and no looser than the annex, else raise PolicyError."""
    if not isinstance(policy, dict) or policy.get("v") != POLICY_FORMAT:
        raise PolicyError("not a policy document of format %d" % POLICY_FORMAT)
    for key in ("id", "unit"):
        if not isinstance(policy.get(key), str) or not policy[key]:
            raise PolicyError("policy needs a %s" % key)
    if not _int_in(policy.get("version"), 1, 1 << 31):
        raise PolicyError("policy version must be a positive integer")
    rows = policy.get("rows")
    if not isinstance(rows, list) or not rows:
        raise PolicyError("policy has no rows")
    seen = {}
    for r in rows:
        if not isinstance(r, dict) or not _int_in(r.get("no"), 1, 9999):
            raise PolicyError("every row needs a number")
        for key in ("matter", "stage", "records", "start", "end", "recorder"):
            if not isinstance(r.get(key), str) or not r[key]:
                raise PolicyError("row %d lacks %s" % (r["no"], key))
        if not isinstance(r.get("continuous"), bool):
            raise PolicyError("row %d must say whether it is continuous" % r["no"])
        if r["no"] in seen:
            raise PolicyError("row %d appears twice" % r["no"])
        seen[r["no"]] = r
    # Art. 12 lets a unit refine the rules, not loosen them: every annex row stays, and every
    # body-worn-recorder row stays continuous.
    for no, _m, _s, _r, _start, _end, recorder in _ANNEX:
        r = seen.get(no)
        if r is None:
            raise PolicyError("row %d of the annex is missing" % no)
        if recorder == "recorder" and (r["recorder"] != "recorder" or not r["continuous"]):
            raise PolicyError("row %d must stay a continuous body-worn recording" % no)
    th = policy.get("thresholds")
    if not isinstance(th, dict):
        raise PolicyError("policy needs thresholds")
    revoked = policy.get("revoked_docks", [])
    if not isinstance(revoked, list) or len(revoked) > MAX_REVOKED:
        raise PolicyError("revoked_docks must be a list of at most %d dock key ids"
                          % MAX_REVOKED)
    for kid in revoked:
        if not isinstance(kid, str) or len(kid) != 32 or kid.strip("0123456789abcdef"):
            raise PolicyError("revoked_docks: %r is not a dock key id (32 hex digits)" % (kid,))
    approved = policy.get("approved_firmware")
    if approved is not None:
        if not isinstance(approved, list) or not 0 < len(approved) <= MAX_APPROVED_FW:
            raise PolicyError("approved_firmware must be a list of 1 to %d firmware versions"
                              " (leave it out to approve any)" % MAX_APPROVED_FW)
        for fw in approved:
            if (not isinstance(fw, str) or not 0 < len(fw) <= MAX_FW_LEN
                    or not all(" " < c <= "~" for c in fw)):
                raise PolicyError("approved_firmware: %r is not a firmware version (1 to %d"
                                  " printable characters)" % (fw, MAX_FW_LEN))
    for key, lo, hi in _LIMITS:
        if not _int_in(th.get(key), lo, hi):
            raise PolicyError("threshold %s must be within %d..%d" % (key, lo, hi))
    return policy


def sign(policy: dict, kid: bytes, sign_fn) -> bytes:
    """The unit signs a policy (on the unit's machine; the device only verifies)."""
    return cose.sign1(cbor.encode(check(policy)), kid, sign_fn)


def read_signed(data) -> dict:
    """The policy document inside a signed policy, checked but NOT its signature: for the dock
    reading the unit's own file; a recorder uses `open_signed`."""
    try:
        return check(cbor.decode(cose.parse_sign1(data).payload))
    except (cose.CoseError, cbor.CBORError) as exc:
        raise PolicyError("not a signed policy: %s" % exc)


def open_signed(data, unit_public: bytes, verify_fn) -> dict:
    """Check a signed policy against the unit key; `verify_fn(public, msg, sig) -> bool`."""
    try:
        return check(cose.open_sign1(data, unit_public, verify_fn))
    except cose.BadSignature:
        raise PolicyError("policy signature does not verify with the unit key")
    except cose.CoseError as exc:
        raise PolicyError("not a signed policy: %s" % exc)
