"""The recorder's rules, one behaviour per check, inside MicroPython.

    micropython -X heapsize=16m tests/mpy/check_device_rules.py

A recorder booted by device/app.py on a littlefs card in RAM, its dock server (device/dock.py)
driven request by request through an in-memory link after a real handshake (a dock
certificate its unit signed, Ed25519 both ways):

- policies: one older than the policy in force, and one under another id with a lower or an
  equal version, are refused (no rollback), each refusal a signed `policy_rejected` event on
  the chain; a higher version under another id is adopted; the floor survives a reboot; a
  card of older firmware (the signed policy alone) keeps its version as the floor;
- releases: one naming another record's hash, or carrying a stale receipt (for another
  record, another device, another dock, a status that is no receipt, another key) frees
  nothing; the right one frees the record and keeps its receipt;
- the phase lock: pause, stop and mute refused in a continuous phase (each a signed
  `refused`); an end confirmation without a request, after its deadline, or after a wrong
  trigger ends nothing; the right trigger confirmed in time ends the phase.

Prints "ok <name>" per check and "ALL OK"; exits 1 on the first failure.
"""

import hashlib
import os
import sys

sys.path.append("tests/mpy")
import crash_points as cp  # noqa: E402
from cards import LOG, log, ok  # noqa: E402

from device import dock as dock_module  # noqa: E402
from device import fs  # noqa: E402
from device import recorder as recorder_module  # noqa: E402
from device.dock import DockServer  # noqa: E402
from device.recorder import Refused  # noqa: E402
from protocol import authority, cose, manifest, messages, policy  # noqa: E402
from protocol.ed25519 import SigningKey, verify  # noqa: E402
from protocol.manifest import record_hash  # noqa: E402

UNIT = SigningKey(hashlib.sha256(b"device rules unit").digest())
UNIT_KID = authority.key_id(UNIT.public)
DOCK = SigningKey(hashlib.sha256(b"device rules dock").digest())
OTHER_DOCK = SigningKey(hashlib.sha256(b"device rules other dock").digest())
DOCK_ID = "rules-dock"
ROOT = "/t"


class Ticks:
    """The millisecond tick the dock server and the recorder time their rules by (a session
    idle for 10 minutes, a handshake per 250 ms, 10 s to confirm a phase end), moved by the
    checks instead of waited for."""

    def __init__(self):
        self.ms = 5000000

    def ticks_ms(self):
        return self.ms

    def ticks_add(self, t, delta):
        return t + delta

    def ticks_diff(self, a, b):
        return a - b


TICKS = Ticks()
dock_module.time = TICKS
recorder_module.time = TICKS


def fresh_card():
    cp.mount("lfs2", cp.fresh_card("lfs2", 1024), ROOT)
    fs._gens.clear()


def boot():
    fs._gens.clear()
    return cp.boot(ROOT, cp.T_FIRST, UNIT.public)


def signed_policy(pid, version):
    doc = policy.annex()
    doc["id"] = pid
    doc["version"] = version
    return policy.sign(doc, UNIT_KID, UNIT.sign)


class LoopLink:
    """The dock link in memory: what the server sends is kept for the test to read."""

    CHUNK = 2035

    def __init__(self):
        self.sent = []

    async def send_data(self, kind, seq, offset, f, n):
        data = f.read(n)
        if len(data) != n:
            raise OSError(5)
        self.sent.append(messages.encode_data(seq, offset, data, kind))

    async def send(self, payload):
        self.sent.append(bytes(payload))


class Dock:
    """A dock that proved its authority to `rec` (hello, auth), then sends requests."""

    def __init__(self, rec, recorder=True):
        self.rec = rec
        self.link = LoopLink()
        self.server = DockServer(self.link, rec.hal, rec.store, rec.key, rec.clock, log,
                                 policies=rec.policies, recorder=rec if recorder else None)
        self.rid = 0
        self.cert = cert = authority.issue_cert(DOCK_ID, DOCK.public, 0, 1 << 62,
                                    ["offload", "clock", "policy"], "rules unit", UNIT_KID,
                                    UNIT.sign)
        self.ident = ident = self.request("hello", proto=messages.PROTOCOL_VERSION, dock=DOCK_ID)
        nonce = os.urandom(authority.NONCE_SIZE)
        proof = authority.dock_proof(rec.hal.device_id, ident["nonce"], nonce, cert)
        answer = self.request("auth", cert=cert, nonce=nonce, sig=DOCK.sign(proof))
        if answer["t"] != "auth_ok":
            raise AssertionError("handshake refused: %r" % (answer,))

    def request(self, mtype, **fields):
        self.rid += 1
        return self.raw(messages.encode_message(messages.make(mtype, rid=self.rid, **fields)))

    def raw(self, payload):
        cp.run(self.server.handle(payload))
        return messages.parse_payload(self.link.sent[-1])[1]

    def receipt(self, seq, digest, device=None, dock=DOCK_ID, status="stored", key=DOCK):
        doc = authority.receipt(device or self.rec.hal.device_id, seq, digest, status, 7, dock)
        return authority.sign_statement(doc, authority.key_id(key.public), key.sign)


def head_event(rec):
    """The newest record on the card, checked to be signed by the recorder's key."""
    raw = rec.store.read_record(rec.store.head_seq)
    env = cose.parse_sign1(raw)
    if not verify(rec.key.public, env.tbs, env.signature):
        raise AssertionError("record %d: the recorder's signature does not verify"
                             % rec.store.head_seq)
    return manifest.decode(env.payload)


# -- policies: no rollback ----------------------------------------------------------------------
def check_policies():
    fresh_card()
    rec = boot()
    dock = Dock(rec)
    ok("the annex is in force first, version 1", rec.policies.name == "gx-water-2019/1")
    answer = dock.request("policy_set", policy=signed_policy("gx-water-2019", 3))
    ok("a newer version is adopted", answer.get("policy") == "gx-water-2019/3", answer)
    ok("the adoption is a signed event", head_event(rec)["event"] == "policy_adopted")

    cases = (("an older version of the same id", "gx-water-2019", 2),
             ("the same version of the same id again", "gx-water-2019", 3),
             ("another id with a lower version", "another-unit-rules", 2),
             ("another id with an equal version", "another-unit-rules", 3))
    for what, pid, version in cases:
        before = rec.store.head_seq
        answer = dock.request("policy_set", policy=signed_policy(pid, version))
        ok("refused: " + what, answer["t"] == "error" and answer["code"] == messages.E_POLICY
           and "not newer" in answer["detail"], answer)
        ok("still in force after it: gx-water-2019/3", rec.policies.name == "gx-water-2019/3"
           and rec.policies.current["version"] == 3)
        event = head_event(rec)
        ok("the refusal is the next signed record of the chain: " + what,
           rec.store.head_seq == before + 1 and event["event"] == "policy_rejected"
           and "not newer" in event["detail"]["reason"], event)

    answer = dock.request("policy_set", policy=signed_policy("another-unit-rules", 4))
    ok("another id with a higher version is adopted",
       answer.get("policy") == "another-unit-rules/4", answer)

    rec = boot()  # power off and on: the floor is on the card
    dock = Dock(rec)
    ok("after a reboot the adopted policy is in force", rec.policies.name == "another-unit-rules/4")
    answer = dock.request("policy_set", policy=signed_policy("gx-water-2019", 4))
    ok("after a reboot an equal version under the old id is still refused",
       answer["t"] == "error" and "not newer" in answer["detail"], answer)
    answer = dock.request("policy_set", policy=signed_policy("gx-water-2019", 5))
    ok("after a reboot a higher version is adopted", answer.get("policy") == "gx-water-2019/5")

    # A policy file of older firmware: the signed policy alone. Its version is the floor.
    fresh_card()
    rec = boot()
    fs.write_atomic(ROOT + "/policy.cose", signed_policy("gx-water-2019", 6))
    rec = boot()
    ok("a card of older firmware keeps its policy", rec.policies.name == "gx-water-2019/6")
    dock = Dock(rec)
    answer = dock.request("policy_set", policy=signed_policy("another-unit-rules", 6))
    ok("... and its version as the floor", answer["t"] == "error"
       and "not newer" in answer["detail"], answer)

    # A stored policy that no longer verifies: the annex applies, the floor stays.
    fresh_card()
    rec = boot()
    Dock(rec).request("policy_set", policy=signed_policy("gx-water-2019", 8))
    stranger = SigningKey(hashlib.sha256(b"a stranger").digest())
    doc = policy.annex()
    doc["version"] = 9
    forged = policy.sign(doc, authority.key_id(stranger.public), stranger.sign)
    from protocol import cbor

    fs.write_atomic(ROOT + "/policy.cose", cbor.encode({"v": 1, "floor": 8, "policy": forged}))
    rec = boot()
    ok("a stored policy that does not verify leaves the annex in force",
       rec.policies.name == "gx-water-2019/1")
    answer = Dock(rec).request("policy_set", policy=signed_policy("gx-water-2019", 7))
    ok("... and still refuses what is older than the floor", answer["t"] == "error"
       and "not newer" in answer["detail"], answer)
    # A policy file this firmware did not write: the annex applies, its floor is not taken.
    v3 = signed_policy("gx-water-2019", 3)
    for what, doc in (("another format version", {"v": 2, "floor": 3, "policy": v3}),
                      ("a policy that is not bytes", {"v": 1, "floor": 9, "policy": "v3"}),
                      ("a floor that is text", {"v": 1, "floor": "9", "policy": v3}),
                      ("a floor that is a boolean", {"v": 1, "floor": True, "policy": v3}),
                      ("no map", [1, 9, v3])):
        fresh_card()
        fs.write_atomic(ROOT + "/policy.cose", cbor.encode(doc))
        rec = boot()
        ok("a policy file with %s leaves the annex in force" % what,
           rec.policies.name == "gx-water-2019/1" and rec.policies.floor == 1)


# -- releases ------------------------------------------------------------------------------------
def check_releases():
    fresh_card()
    rec = boot()
    for _ in range(3):
        rec.event("bookmark")
    dock = Dock(rec)
    h1, h2 = record_hash(rec.store.read_record(1)), record_hash(rec.store.read_record(2))
    other = OTHER_DOCK

    def refused(what, seq, digest, rcpt):
        answer = dock.request("release", seq=seq, manifest_sha256=digest, receipt=rcpt)
        ok("frees nothing: " + what, answer["t"] == "error" and answer["code"]
           == messages.E_MISMATCH and seq in rec.store.pending(), answer)

    refused("a release naming another record's hash", 2, h1, dock.receipt(2, h1))
    refused("a stale receipt, for another record", 2, h2, dock.receipt(1, h1))
    refused("a receipt naming another record's hash", 2, h2, dock.receipt(2, h1))
    refused("a receipt for another recorder", 2, h2, dock.receipt(2, h2, device="SIM-OTHER"))
    refused("a receipt naming another dock", 2, h2, dock.receipt(2, h2, dock="another-dock"))
    refused("a receipt whose status is no receipt", 2, h2, dock.receipt(2, h2, status="seen"))
    refused("a receipt signed by another key", 2, h2, dock.receipt(2, h2, key=other))
    refused("a head statement in place of a receipt", 2, h2, authority.sign_statement(
        authority.head(rec.hal.device_id, 2, h2, DOCK_ID, bytes(16)),
        authority.key_id(DOCK.public), DOCK.sign))
    answer = dock.request("release", seq=9, manifest_sha256=h2, receipt=dock.receipt(9, h2))
    ok("a release of a record not on the card is refused",
       answer["t"] == "error" and answer["code"] == messages.E_UNKNOWN_RECORD, answer)
    for status in ("stored", "quarantined"):
        seq = 1 if status == "stored" else 2
        digest = h1 if seq == 1 else h2
        rcpt = dock.receipt(seq, digest, status=status)
        answer = dock.request("release", seq=seq, manifest_sha256=digest, receipt=rcpt)
        ok("a receipt of a %s record frees it" % status, answer["t"] == "released"
           and answer["seq"] == seq and seq not in rec.store.pending(), answer)
        ok("... after the receipt was kept", rec.store.receipts()[-1] == rcpt)
    ok("the record after them stays", rec.store.pending() == [3])

    # An error inside a handler (here the card refuses the receipt) is answered, not fatal.
    fs.remove(ROOT + "/receipts.0")
    os.mkdir(ROOT + "/receipts.0")
    h3 = record_hash(rec.store.read_record(3))
    answer = dock.request("release", seq=3, manifest_sha256=h3, receipt=dock.receipt(3, h3))
    ok("an error inside a handler is answered as an internal error",
       answer["t"] == "error" and answer["code"] == messages.E_INTERNAL, answer)
    ok("... and frees nothing", rec.store.pending() == [3])
    os.rmdir(ROOT + "/receipts.0")

    # One handshake per 250 ms: one 249 ms after the last is refused, one 250 ms after taken.
    for gap, taken in ((249, False), (250, True)):
        answer = dock.request("hello", proto=messages.PROTOCOL_VERSION, dock=DOCK_ID)
        nonce = os.urandom(authority.NONCE_SIZE)
        proof = authority.dock_proof(rec.hal.device_id, answer["nonce"], nonce, dock.cert)
        dock.server._auth_ms = TICKS.ms - gap
        answer = dock.request("auth", cert=dock.cert, nonce=nonce, sig=DOCK.sign(proof))
        ok("a handshake %d ms after the last one is %s" % (gap, "taken" if taken else
                                                           "refused"),
           (answer["t"] == "auth_ok") == taken and (taken or answer["code"] == messages.E_BUSY),
           answer)

    # What is not a request is answered as a bad request, under rid 0 (it has none).
    for what, payload in (("bytes that are no message", b"M\xff\x00"),
                          ("a map that is no request", messages.encode_message({"t": 5})),
                          ("a data chunk", b"D" + bytes(16)),
                          ("a request too large to decode", Exhausting())):
        answer = dock.raw(payload)
        ok("refused as a bad request, rid 0: " + what, answer["t"] == "error"
           and answer["code"] == messages.E_BAD_REQUEST and answer["rid"] == 0, answer)
    dock.server._handlers["head"] = out_of_memory
    answer = dock.request("head", nonce=bytes(16))
    ok("a handler out of memory is answered, not fatal", answer["t"] == "error"
       and answer["code"] == messages.E_INTERNAL and answer["detail"] == "out of memory", answer)

    # The session lapses after 10 minutes without a request: at 600 000 ms it still holds.
    for idle, holds in ((600000, True), (600001, False)):
        dock.server._seen_ms = TICKS.ms - idle
        answer = dock.request("release", seq=3, manifest_sha256=h1, receipt=dock.receipt(3, h1))
        ok("a session idle for %d ms %s" % (idle, "holds" if holds else "has lapsed"),
           (answer["code"] == messages.E_MISMATCH) if holds
           else (answer["code"] == messages.E_UNAUTHORIZED), answer)
    ok("... and frees nothing", rec.store.pending() == [3])


class Exhausting:
    """A payload whose reading runs out of memory (a request built to exhaust a small heap)."""

    def __getitem__(self, at):
        raise MemoryError

    def __len__(self):
        return 4096


async def out_of_memory(msg):
    raise MemoryError


def check_identity():
    fresh_card()
    rec = boot()
    LOG.clear()
    dock = Dock(rec)
    ok("identify offers the chunks the link sends",
       dock.ident["limits"]["chunk"] == dock.link.CHUNK)
    bare = Dock(rec, recorder=False)
    answer = bare.request("clock_adjust", delta_us=-2500, uncertainty_us=150)
    ok("a clock step on a server with no recorder names no event",
       answer["t"] == "clock_set" and answer["event"] == 0, answer)
    answer = dock.request("clock_adjust", delta_us=-2500, uncertainty_us=150)
    event = head_event(rec)
    ok("a clock step is a signed event naming the dock", answer["event"] == rec.store.head_seq
       and event["event"] == "clock_stepped" and event["detail"]["dock"] == DOCK_ID, event)
    name = "d" * 64
    dock.request("hello", proto=messages.PROTOCOL_VERSION, dock=name)
    ok("the log names a dock's whole 64-character name", "hello from " + name in LOG, LOG[-3:])


# -- the phase lock ------------------------------------------------------------------------------
def refused_action(rec, action, *args):
    before = rec.store.head_seq
    try:
        rec.handle(action, list(args))
    except Refused:
        return rec.store.head_seq - before
    raise AssertionError("%s was not refused" % action)


def check_phase_lock():
    fresh_card()
    rec = boot()
    rec.handle("phase_start", ["4", "CASE-1", "OFFICER-1"])
    ok("a phase starts on a body-worn row", rec.phase.get("row") == 4 and rec.recording)
    for action in ("pause", "stop", "mute"):
        signed = refused_action(rec, action)
        event = head_event(rec)
        ok("refused in a continuous phase, as a signed event: " + action, signed == 1
           and event["event"] == "refused" and event["detail"]["action"] == action
           and event["phase"]["row"] == 4, event)
    ok("... and recording goes on", rec.recording and not rec.muted)
    ok("a second phase cannot start over it", refused_action(
        rec, "phase_start", "5", "CASE-2", "OFFICER-1") == 1 and rec.phase["row"] == 4)

    ok("an end confirmation without a request ends nothing",
       refused_action(rec, "end_confirm") == 0 and rec.phase.get("row") == 4)
    ok("a wrong end trigger is refused, as a signed event",
       refused_action(rec, "end_request", "lunch", "break") == 1
       and head_event(rec)["event"] == "refused" and rec.phase.get("row") == 4)
    ok("... and leaves nothing to confirm",
       refused_action(rec, "end_confirm") == 0 and rec.phase.get("row") == 4)

    end = rec.policies.row(4)["end"]
    ok("the right trigger asks for a confirmation",
       rec.handle("end_request", end.split()) == "confirm_end" and rec.phase.get("row") == 4)
    TICKS.ms += 10001  # 10 s and a millisecond later
    try:
        rec.handle("end_confirm", [])
        refusal = ""
    except Refused as exc:
        refusal = str(exc)
    ok("a confirmation after its deadline ends nothing, saying why",
       rec.phase.get("row") == 4 and "confirm within 10 s" in refusal, refusal)
    ok("... nor does a second one", refused_action(rec, "end_confirm") == 0)

    rec.handle("end_request", end.split())
    TICKS.ms += 10000  # confirmed at the last millisecond
    before = rec.store.head_seq
    rec.handle("end_confirm", [])
    event = head_event(rec)
    ok("the right trigger confirmed in time ends the phase, as a signed event",
       not rec.phase and rec.store.head_seq == before + 1 and event["event"] == "phase_ended"
       and event["detail"]["end"] == end, event)
    ok("a phase ended while recording is no longer the one in force across a power cut",
       rec.store.read_meta()["active"] == {})
    ok("outside a phase stop is not refused", rec.handle("stop", []) == "idle"
       and head_event(rec)["event"] == "recording_stopped" and not rec.recording)
    ok("outside a phase an end request is refused", refused_action(
        rec, "end_request", *end.split()) == 0)



class WeakBattery:
    def __init__(self, pct):
        self.pct = pct

    def read(self):
        return 3500, self.pct, False


def end_phase(rec):
    end = rec.policies.row(rec.phase["row"])["end"]
    rec.handle("end_request", end.split())
    rec.handle("end_confirm", [])


class FixedStorage:
    def __init__(self, free):
        self.free = free

    def usage(self):
        return self.free, 1 << 30


def check_actions():
    fresh_card()
    rec = boot()
    rec.handle("notice", ["whole", "process", "recorded"])
    event = head_event(rec)
    ok("a notice is a signed event with its note", event["event"] == "notice_given"
       and event["detail"] == {"note": "whole process recorded"}, event)
    rec.handle("bookmark", [])
    ok("a bookmark without a note has none", head_event(rec)["detail"] == {})
    try:
        rec.handle("phase_start", ["four", "C-1", "O-1"])
        refusal = ""
    except Refused as exc:
        refusal = str(exc)
    ok("a phase row that is no number is refused, naming it", "'four'" in refusal, refusal)

    rec.hal.indicator.state = "refused"
    ok("stop while idle shows idle", rec.handle("stop", []) == "idle"
       and rec.hal.indicator.state == "idle")
    rec.handle("record", [])
    ok("recording notes itself on the card", rec.recording and rec.store.read_meta() is not None)
    rec.handle("stop", [])
    ok("stop before the camera began clears that note", not rec.recording
       and rec.store.read_meta() is None and head_event(rec)["event"] == "recording_stopped")
    rec.handle("mute", [])
    ok("outside a phase mute works, as a signed event", rec.muted
       and head_event(rec)["event"] == "muted")
    rec.handle("unmute", [])
    ok("... and unmute", not rec.muted and head_event(rec)["event"] == "unmuted")

    for args, why in ((["4", "C-1"], "needs: row case-number officer-id"),
                      (["99", "C-1", "O-1"], "row 99 is not a body-worn recorder row"),
                      (["1", "C-1", "O-1"], "row 1 is not a body-worn recorder row")):
        try:
            rec.handle("phase_start", args)
            refusal = ""
        except Refused as exc:
            refusal = str(exc)
        ok("phase_start %s is refused: %s" % (" ".join(args), why), why in refusal, refusal)

    # Casual recording keeps the policy's reserve free for mandated phases.
    card = rec.hal.storage
    rec.policies.current["thresholds"]["storage_reserve_mb"] = 1
    rec.hal.storage = FixedStorage(1048576 - 1)
    ok("recording with less than the reserve free is refused",
       refused_action(rec, "record") == 1 and not rec.recording)
    rec.hal.storage = FixedStorage(1048576)
    ok("recording with the reserve free is not", rec.handle("record", []) == "recording")
    rec.handle("stop", [])
    rec.hal.storage = card
    rec.policies.current["thresholds"]["storage_reserve_mb"] = 0

    # Unmute cuts the segment: what was recorded muted is a segment of its own.
    rec.handle("mute", [])
    rec.handle("record", [])
    rec.hal.camera.at(2, lambda: rec.handle("unmute", []))
    cp.run(rec.step())
    seg = rec.store.head_fields
    ok("unmute ends the muted segment", seg["kind"] == "segment" and seg["tracks"] == ["video"]
       and seg["size"] == 2 * cp.CHUNK, seg)
    rec.handle("stop", [])
    cp.drive(rec)

    # Mute cuts the segment too: what was recorded with sound is a segment of its own.
    rec.handle("record", [])
    rec.hal.camera.at(2, lambda: rec.handle("mute", []))
    cp.run(rec.step())
    seg = rec.store.head_fields
    ok("mute ends the segment recorded with sound", seg["kind"] == "segment"
       and seg["tracks"] == ["audio", "video"] and seg["size"] == 2 * cp.CHUNK, seg)
    rec.handle("unmute", [])
    rec.handle("stop", [])
    cp.drive(rec)

    # A phase's end cuts the segment: every segment belongs to one phase.
    rec.handle("phase_start", ["4", "C-9", "O-1"])
    rec.hal.camera.at(2, lambda: end_phase(rec))
    cp.run(rec.step())
    seg = rec.store.head_fields
    ok("the end of a phase ends its segment", seg["kind"] == "segment"
       and seg["phase"].get("case") == "C-9" and seg["size"] == 2 * cp.CHUNK, seg)
    rec.handle("stop", [])
    cp.drive(rec)

    # A phase started on a weak battery records, with a signed override first.
    before = rec.store.head_seq
    rec.handle("phase_start", ["4", "C-2", "O-1"])
    ok("a phase on a charged battery signs no override", rec.store.head_seq == before + 1
       and head_event(rec)["event"] == "phase_started")
    end_phase(rec)
    rec.hal.battery_main = WeakBattery(20)  # at the floor, not below it
    before = rec.store.head_seq
    rec.handle("phase_start", ["4", "C-4", "O-1"])
    ok("a phase on a battery at the floor signs no override", rec.store.head_seq == before + 1)
    end_phase(rec)
    rec.hal.battery_main = WeakBattery(12)
    before = rec.store.head_seq
    rec.handle("phase_start", ["4", "C-3", "O-1"])
    ok("a phase on a weak battery starts after a signed override",
       rec.store.head_seq == before + 2 and rec.store.fields(before + 1)["event"]
       == "low_battery_override" and rec.store.fields(before + 1)["detail"]["pct"] == 12
       and rec.phase["case"] == "C-3")
    end_phase(rec)

    # A full card keeps its last room (half the spare) for the dock's receipts.
    half = rec.store.spare_size() // 2
    rec.full = rec.store.head_seq
    card = rec.hal.storage
    rec.hal.storage = FixedStorage(half)
    rec.handle("bookmark", [])
    ok("a full card with half the spare free still takes an action",
       head_event(rec)["event"] == "bookmark")
    rec.hal.storage = FixedStorage(half - 1)
    ok("a full card with less than that refuses it",
       refused_action(rec, "bookmark") == 0)
    rec.hal.storage, rec.full = card, 0


check_policies()
check_identity()
check_releases()
check_phase_lock()
check_actions()
print("ALL OK")
