"""Protocol golden vectors under MicroPython (also runs on CPython): framing, messages, COSE."""

import json
import sys
from binascii import hexlify, unhexlify

from protocol import cose, framing, manifest, messages
from protocol.ed25519 import SigningKey, verify

failures = []


def check(name, ok):
    print(("ok   " if ok else "FAIL ") + name)
    if not ok:
        failures.append(name)


with open("tests/vectors/protocol.json") as f:
    vec = json.load(f)

for i, v in enumerate(vec["frames"]):
    payload, frame = unhexlify(v["payload"]), unhexlify(v["frame"])
    check("frame %d encodes" % i, framing.encode_frame(payload) == frame)
    dec = framing.FrameDecoder()
    dec.receive_data(b"noise\xb0" + frame + frame[:5])
    check("frame %d decodes after noise" % i, dec.next_frame() == payload)
    check("frame %d partial waits" % i, dec.next_frame() is None)

for i, v in enumerate(vec["messages"]):
    payload = unhexlify(v["payload"])
    kind, msg = messages.parse_payload(payload)
    check("message %d parses" % i, kind == "msg")
    check("message %d re-encodes byte-exact" % i, messages.encode_message(msg) == payload)

for v in vec["data"]:
    payload = unhexlify(v["payload"])
    kind, (seq, off, data) = messages.parse_payload(payload)
    check("data chunk", (seq, off, bytes(data)) == (v["seq"], v["offset"], unhexlify(v["data"])))

for v in vec["records"]:
    key = SigningKey(unhexlify(v["seed"]))
    record = unhexlify(v["record"])
    env = cose.parse_sign1(record)
    check("record verifies", verify(key.public, env.tbs, env.signature))
    fields = manifest.decode(env.payload)
    kid = env.kid
    again = cose.sign1(manifest.encode(fields), kid, key.sign)
    check("record re-signs byte-exact", again == record)
    check("record hash", hexlify(manifest.record_hash(record)).decode() == v["record_sha256"])
    bad = bytearray(record)
    bad[-70] ^= 1
    env_bad = cose.parse_sign1(bytes(bad))
    check("tampered record fails", not verify(key.public, env_bad.tbs, env_bad.signature))

if failures:
    print("FAILED: %d" % len(failures))
    sys.exit(1)
print("ALL OK")
