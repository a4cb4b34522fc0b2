"""What the checks inside MicroPython share (tests/mpy/check_*.py): a check that stops the
script at its first failure and shows the tail of what the device logged (`log` into LOG), a
fresh card on a RAM block device, fake records (signed by no one: the store does not verify)
and small file helpers."""

import sys

sys.path.append("tests/mpy")
import crash_points as cp  # noqa: E402

from device import fs  # noqa: E402
from protocol import cose, manifest  # noqa: E402

LOG = []


def log(text):
    LOG.append(text)


def ok(name, cond, detail=""):
    if not cond:
        print("FAIL", name, detail)
        for line in LOG[-30:]:
            print("  device:", line)
        sys.exit(1)
    print("ok  ", name)


def card(kind, blocks=256):
    cp.mount(kind, cp.fresh_card(kind, blocks), "/t")
    fs._gens.clear()
    return "/t"


def fake_record(seq, prev, kind="event", size=0, sha=bytes(32)):
    fields = {"v": 1, "kind": kind, "device_id": "SIM-T", "seq": seq, "prev": prev,
              "policy": "p/1", "fw": "t"}
    if kind == "segment":
        fields.update({"sha256": sha, "size": size, "t_start": seq, "t_end": seq + 1,
                       "clock": {}, "tracks": ["audio", "video"], "truncated": False,
                       "phase": {}, "pre_event_ms": 0})
    else:
        fields.update({"t": seq, "clock": {}, "event": "bookmark", "detail": {}, "phase": {}})
    return cose.sign1(manifest.encode(fields), bytes(16), lambda m: bytes(64)), fields


def add_events(store, count):
    for _ in range(count):
        raw, fields = fake_record(store.head_seq + 1, store.head_hash)
        store.add(store.head_seq + 1, None, raw, fields)


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def read(path):
    """A file's bytes, or None if it is not there."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None
