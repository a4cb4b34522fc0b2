"""Fuzzing every host-side decoder with valid inputs damaged at random (hypothesis).

tests/unit/test_framing.py, test_messages.py and test_cbor.py fuzz their decoders with random
bytes; this file adds what they lack: COSE envelopes, manifests and the evidence checks, and
*mutations of valid inputs* for every layer (random bytes rarely get past a decoder's first
check; a flipped bit in a good frame or record does). The contract everywhere: only the
layer's documented error type is raised, and whatever is accepted is exactly what was sent
(or, for CBOR-based layers, the one deterministic encoding of what it decoded to).
"""

from __future__ import annotations

import json
from binascii import unhexlify
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from host_agent.vault.evidence import EvidenceError, verify_record
from protocol import cbor, cose, framing, manifest, messages

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "protocol.json")
                     .read_text())
RECORDS = [(unhexlify(v["record"]), unhexlify(v["public"])) for v in VECTORS["records"]]
MESSAGES = [unhexlify(v["payload"]) for v in VECTORS["messages"]]
FRAMES = [unhexlify(v["payload"]) for v in VECTORS["frames"]] + MESSAGES
FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutated(draw: st.DrawFn, sources: list[bytes]) -> tuple[bytes, bytes]:
    """(original, mutation): 1-4 byte flips, inserts, deletes or a truncation of a source."""
    original = draw(st.sampled_from(sources))
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[at:at + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[at:]
    return original, bytes(data)


# -- framing --------------------------------------------------------------------------------
@FUZZ
@given(st.lists(st.sampled_from(FRAMES), min_size=1, max_size=6), st.data())
def test_framing_damaged_stream_yields_only_sent_payloads(payloads, data) -> None:
    stream = bytearray(b"".join(framing.encode_frame(p) for p in payloads))
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(stream) - 1))
        op = data.draw(st.sampled_from(["flip", "drop", "insert"]))
        if op == "flip":
            stream[at] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "drop":
            del stream[at]
        else:
            stream.insert(at, data.draw(st.integers(0, 255)))
    step = data.draw(st.integers(1, 97))
    dec = framing.FrameDecoder(max_payload=4096)
    out = []
    for i in range(0, len(stream), step):
        dec.receive_data(bytes(stream[i:i + step]))
        while (p := dec.next_frame()) is not None:
            out.append(p)
    assert set(out) <= set(payloads)  # a CRC-32 collision is the only way round this
    assert len(out) <= len(payloads)
    assert dec.buffered() <= framing.HEADER_SIZE + 4096 + framing.TRAILER_SIZE


# -- CBOR -----------------------------------------------------------------------------------
@FUZZ
@given(mutated([r for r, _ in RECORDS] + [m[1:] for m in MESSAGES]))
def test_cbor_mutations_raise_cbor_error_or_decode_canonically(pair) -> None:
    _, data = pair
    try:
        value = cbor.decode(data)
    except cbor.CBORError:
        return
    assert cbor.encode(value) == data


# -- messages -------------------------------------------------------------------------------
@FUZZ
@given(mutated(MESSAGES))
def test_message_mutations_raise_protocol_error_or_parse_to_a_valid_message(pair) -> None:
    _, data = pair
    try:
        kind, body = messages.parse_payload(data)
    except messages.ProtocolError:
        return
    if kind == "msg":
        assert messages.check(body) is body
        assert messages.encode_message(body) == data
    else:
        seq, offset, chunk = body
        assert data[0] == (messages.KIND_DATA if kind == "data" else messages.KIND_RECORD)
        assert len(chunk) == len(data) - messages.DATA_HEADER_SIZE


@FUZZ
@given(st.sampled_from(sorted(messages.SCHEMA)), st.dictionaries(
    st.sampled_from(["rid", "t1", "seq", "items", "code", "x"]),
    st.one_of(st.integers(-2**64, 2**64 - 1), st.binary(max_size=8), st.text(max_size=8),
              st.booleans(), st.none(), st.lists(st.integers(-9, 9), max_size=3)),
    max_size=5))
def test_any_cbor_map_is_a_message_or_a_protocol_error(mtype, fields) -> None:
    payload = b"M" + cbor.encode({"t": mtype, **fields})
    try:
        messages.parse_payload(payload)
    except messages.ProtocolError:
        pass


# -- COSE, manifest, evidence --------------------------------------------------------------------
@FUZZ
@given(st.binary(max_size=300))
def test_cose_random_bytes_raise_cose_error(data) -> None:
    try:
        cose.parse_sign1(data)
    except cose.CoseError:
        pass


@FUZZ
@given(mutated([r for r, _ in RECORDS]))
def test_cose_mutations_raise_cose_error_or_parse_whole(pair) -> None:
    _, data = pair
    try:
        env = cose.parse_sign1(data)
    except cose.CoseError:
        return
    assert len(env.signature) == 64 and isinstance(env.kid, bytes)
    assert env.tbs == cose.to_be_signed(env.protected, env.payload)


@FUZZ
@given(mutated([cose.parse_sign1(r).payload for r, _ in RECORDS]))
def test_manifest_mutations_raise_manifest_error_or_decode_checked(pair) -> None:
    _, data = pair
    try:
        fields = manifest.decode(data)
    except manifest.ManifestError:
        return
    assert manifest.check(fields) is fields
    assert cbor.encode(fields) == data


@FUZZ
@given(mutated([r for r, _ in RECORDS]))
def test_evidence_accepts_no_mutated_record(pair) -> None:
    original, data = pair
    public = dict(RECORDS)[original]
    good = manifest.decode(cose.parse_sign1(original).payload)
    try:
        fields = verify_record(data, public, good["device_id"], good["seq"], good["prev"])
    except EvidenceError:
        return
    # Only a change the signature does not cover could pass, and it must not change the facts.
    assert fields == good
