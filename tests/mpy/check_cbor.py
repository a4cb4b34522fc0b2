"""Check protocol.cbor against tests/vectors/cbor.json; runs on MicroPython and CPython.

Run from the repository root: `micropython tests/mpy/check_cbor.py` (with the repo on
MICROPYPATH). Prints "ALL OK" and exits 0, or prints each failure and exits 1.
"""

import json
import sys
from binascii import hexlify, unhexlify

from protocol.cbor import CBORError, Tag, decode, decode_from, encode

VECTORS_PATH = "tests/vectors/cbor.json"


def from_json(value):
    """Turn the vectors' JSON form into codec values.

    JSON has no bytes, no int map keys and no tags, so those are spelled
    {"bytes": hex}, {"map": [[key, value], ...]} and {"tag": n, "value": v}.
    """
    if isinstance(value, list):
        return [from_json(item) for item in value]
    if isinstance(value, dict):
        if "bytes" in value:
            return unhexlify(value["bytes"])
        if "map" in value:
            result = {}
            for key, item in value["map"]:
                result[from_json(key)] = from_json(item)
            return result
        if "tag" in value:
            return Tag(value["tag"], from_json(value["value"]))
        raise ValueError("unknown JSON form: " + repr(value))
    return value


def load_vectors(path=VECTORS_PATH):
    with open(path) as handle:
        return json.load(handle)


def check_all(vectors):
    """Return a list of failure messages (empty when everything passed)."""
    failures = []
    for vector in vectors["valid"]:
        label = vector["hex"][:40]
        expected_bytes = unhexlify(vector["hex"])
        value = from_json(vector["value"])
        try:
            encoded = encode(value)
            if encoded != expected_bytes:
                failures.append(
                    "encode " + label + ": got " + hexlify(encoded).decode()
                )
            decoded = decode(expected_bytes)
            if decoded != value:
                failures.append("decode " + label + ": got " + repr(decoded))
            # A prefix read must stop exactly at the item's end.
            prefixed = decode_from(b"\xff" + expected_bytes + b"\xff", 1)
            if prefixed != (value, 1 + len(expected_bytes)):
                failures.append("decode_from " + label + ": got " + repr(prefixed))
        except CBORError as error:
            failures.append("valid " + label + " raised CBORError: " + str(error))
    for vector in vectors["invalid"]:
        data = unhexlify(vector["hex"])
        try:
            result = decode(data)
        except CBORError:
            continue
        except Exception as error:  # noqa: BLE001 - the check: nothing else may escape
            failures.append(
                "invalid "
                + vector["hex"][:40]
                + " ("
                + vector["why"]
                + ") raised "
                + type(error).__name__
                + ": "
                + str(error)
            )
            continue
        failures.append(
            "invalid "
            + vector["hex"][:40]
            + " ("
            + vector["why"]
            + ") decoded to "
            + repr(result)
        )
    return failures


def main():
    failures = check_all(load_vectors())
    if failures:
        for failure in failures:
            print("FAIL", failure)
        print(len(failures), "failure(s)")
        sys.exit(1)
    print("ALL OK")


if __name__ == "__main__":
    main()
