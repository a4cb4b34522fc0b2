"""One docking of one recorder: identify, sync the clock, offload into the vault, check readiness.

The session speaks protocol/messages.py over any Transport. Nothing is released on the device
until the vault has committed it durably and the release names the exact record hash. A
record that fails a check is kept aside in quarantine with its data, and stays on the device.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

from host_agent import clocksync
from host_agent.evidence import EvidenceError, key_id, verify_data, verify_record
from host_agent.transport import Transport, TransportError
from host_agent.vault import Incoming, Vault
from protocol import manifest, messages

log = logging.getLogger("bodycam.dock")

READ_WINDOW = 1 << 20  # bytes asked for per read request
READ_AHEAD = 2  # read requests kept in flight


class SessionError(Exception):
    """The docking cannot go on (unknown device, protocol breach, link lost for good)."""


class DeviceError(SessionError):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"device answered {code}: {detail}")
        self.code = code


@dataclass
class Thresholds:
    """Release-for-duty limits (Art. 4); a unit may tighten them."""

    main_min_pct: int = 80
    backup_min_pct: int = 50
    storage_min_free_pct: int = 20
    clock_max_error_us: int = 10_000


@dataclass
class Identity:
    device_id: str
    firmware: str
    public_key: bytes
    limits: dict[str, Any]
    newly_enrolled: bool = False

    @property
    def fingerprint(self) -> str:
        return key_id(self.public_key).hex()


@dataclass
class Readiness:
    ready: bool
    reasons: list[str]
    status: dict[str, Any]


@dataclass
class Offload:
    stored: list[int] = field(default_factory=list)
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    released: list[int] = field(default_factory=list)
    segments: int = 0
    bytes: int = 0
    seconds: float = 0.0
    resumed_reads: int = 0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds > 0 else 0.0


Progress = Callable[[int, int], None]


class DockSession:
    def __init__(
        self,
        transport: Transport,
        vault: Vault,
        *,
        dock_id: str = "dock",
        thresholds: Thresholds | None = None,
        enroll_unknown: bool = False,
        timeout: float = 5.0,
    ) -> None:
        self.transport = transport
        self.vault = vault
        self.dock_id = dock_id
        self.thresholds = thresholds or Thresholds()
        self.enroll_unknown = enroll_unknown
        self.timeout = timeout
        self._rid = 0
        self.identity: Identity | None = None

    # -- request/response ---------------------------------------------------------------
    def _send(self, mtype: str, **fields: Any) -> int:
        self._rid += 1
        msg = messages.make(mtype, rid=self._rid, **fields)
        self.transport.send(messages.encode_message(msg))
        return self._rid

    def _await(self, rid: int, timeout: float | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            remaining = deadline - time.monotonic()
            payload = self.transport.receive(max(0.0, remaining)) if remaining > 0 else None
            if payload is None:
                raise TransportError(f"no answer to request {rid} in {timeout or self.timeout}s")
            try:
                kind, body = messages.parse_payload(payload)
            except messages.ProtocolError as exc:
                log.warning("ignored a bad payload from the device: %s", exc)
                continue
            if kind != "msg" or body["rid"] != rid:
                continue  # a late answer to an earlier request
            if body["t"] == "error":
                raise DeviceError(body["code"], body["detail"])
            return body

    def request(self, mtype: str, timeout: float | None = None, **fields: Any) -> dict[str, Any]:
        # A lost answer (an MQTT broker restart loses what it held, a noisy line drops a frame)
        # is asked for again, except clock_adjust: it is relative and never repeated blindly.
        tries = 1 if mtype in ("clock_adjust", "hello") else 3
        for attempt in range(tries):
            try:
                return self._await(self._send(mtype, **fields), timeout)
            except TransportError:
                if attempt + 1 == tries:
                    raise
                log.warning("no answer to %s; asking again", mtype)
        raise AssertionError("unreachable")

    # -- steps ------------------------------------------------------------------------------
    def identify(self, wait: float = 30.0) -> Identity:
        """Say hello until the device answers (it may still be booting or recording)."""
        deadline = time.monotonic() + wait
        while True:
            try:
                reply = self.request("hello", timeout=1.0, proto=messages.PROTOCOL_VERSION,
                                     dock=self.dock_id)
                break
            except TransportError:
                if time.monotonic() > deadline:
                    raise SessionError(f"no recorder answered on {self.transport.name}") from None
        ident = Identity(reply["device_id"], reply["fw"], reply["public_key"], reply["limits"])
        enrolled = self.vault.public_key(ident.device_id)
        if enrolled is None:
            if not self.enroll_unknown:
                raise SessionError(
                    f"recorder {ident.device_id} (key {ident.fingerprint}) is not enrolled; "
                    "check the key fingerprint on the device, then run `bodycam enroll`"
                )
            self.vault.enroll(ident.device_id, ident.public_key, by=self.dock_id,
                              note="enrolled at first docking")
            ident.newly_enrolled = True
        elif enrolled != ident.public_key:
            raise SessionError(
                f"recorder {ident.device_id} presents key {ident.fingerprint}, "
                f"not its enrolled key {key_id(enrolled).hex()}: refusing it"
            )
        self.identity = ident
        log.info("identified %s fw %s key %s", ident.device_id, ident.firmware, ident.fingerprint)
        return ident

    def _measure(self, count: int) -> clocksync.Sample:
        samples = []
        for _ in range(count):
            t1 = clocksync.host_now_us()
            reply = self.request("ping", t1=t1)
            t4 = clocksync.host_now_us()
            samples.append(clocksync.Sample(t1, reply["t2"], reply["t3"], t4))
        return clocksync.best(samples)

    def sync_clock(self, burst: int = 16) -> clocksync.SyncResult:
        before = self._measure(burst)
        self.request("clock_adjust", delta_us=-before.offset_us, uncertainty_us=before.bound_us)
        after = self._measure(burst)
        result = clocksync.SyncResult(before.offset_us, before.bound_us, after.offset_us,
                                      after.bound_us, -before.offset_us, 2 * burst)
        log.info("clock offset %d us -> %d us (bound %d us)", before.offset_us,
                 after.offset_us, after.bound_us)
        return result

    def push_policy(self, signed: bytes) -> str:
        """Deliver a unit-signed policy; the device checks the signature itself."""
        reply = self.request("policy_set", policy=signed)
        log.info("device adopted policy %s", reply["policy"])
        return str(reply["policy"])

    def check_readiness(self, sync: clocksync.SyncResult | None) -> Readiness:
        status = self.request("get_status")
        th = self.thresholds
        reasons = []
        main, backup, storage = status["battery_main"], status["battery_backup"], status["storage"]
        if main["pct"] < th.main_min_pct:
            reasons.append(f"main battery {main['pct']}% < {th.main_min_pct}%")
        if backup["pct"] < th.backup_min_pct:
            reasons.append(f"backup battery {backup['pct']}% < {th.backup_min_pct}%")
        free_pct = 100 * storage["free"] // max(1, storage["total"])
        if free_pct < th.storage_min_free_pct:
            reasons.append(f"storage {free_pct}% free < {th.storage_min_free_pct}%")
        faults = status["health"].get("faults", [])
        if faults:
            reasons.append("self-test faults: " + ", ".join(str(f) for f in faults))
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
        return Readiness(not reasons, reasons, status)

    # -- offload ------------------------------------------------------------------------------
    def list_records(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        from_seq = 1
        while True:
            reply = self.request("list", from_seq=from_seq, limit=64)
            items.extend(reply["items"])
            if not reply["more"] or not reply["items"]:
                return items
            from_seq = reply["items"][-1]["seq"] + 1

    def offload(self, progress: Progress | None = None) -> Offload:
        """Fetch, verify and store every record on the device in chain order; release each
        one only once the vault has committed it."""
        ident = self.identity
        if ident is None:
            raise SessionError("identify first")
        result = Offload()
        items = self.list_records()
        total = sum(int(it["stored"]) for it in items)
        done = 0
        head_seq, head_hash = self.vault.head(ident.device_id)
        broken_after: int | None = None
        t0 = time.monotonic()
        for item in items:
            seq, record, stored = int(item["seq"]), bytes(item["record"]), int(item["stored"])
            if self._stored_before(seq, record, result):
                done += stored
                continue
            fields: dict[str, Any] | None = None
            problem: EvidenceError | None = None
            if broken_after is not None:
                # Every later record links to the quarantined one: keep them aside too.
                problem = EvidenceError("chain_broken",
                                        f"follows quarantined record {broken_after}")
            else:
                try:
                    fields = verify_record(record, ident.public_key, ident.device_id,
                                           head_seq + 1, head_hash)
                except EvidenceError as exc:
                    problem = exc

            def step(n: int, base: int = done) -> None:
                if progress:
                    progress(base + n, total)

            receipt = self._ingest(seq, record, stored, fields, problem, result, step)
            done += stored
            if receipt is None:
                broken_after = seq
                continue
            head_seq, head_hash = seq, receipt
            self._release(seq, receipt, result)
        result.seconds = time.monotonic() - t0
        return result

    def _stored_before(self, seq: int, record: bytes, result: Offload) -> bool:
        """A record the vault already holds: the last docking's release was lost."""
        assert self.identity is not None
        already = self.vault.stored_record_hash(self.identity.device_id, seq)
        if already is None:
            return False
        if already == manifest.record_hash(record):
            self._release(seq, already, result)
        else:
            self._quarantine(seq, record, None, "conflict",
                             f"record {seq} differs from the one in the vault", result)
        return True

    def _ingest(self, seq: int, record: bytes, stored: int, fields: dict[str, Any] | None,
                problem: EvidenceError | None, result: Offload,
                progress: Callable[[int], None]) -> bytes | None:
        """Fetch a record's data (if any) and commit it; None if it went to quarantine."""
        is_segment = fields is not None and fields["kind"] == manifest.KIND_SEGMENT
        # Events and gaps carry no data; anything with data is fetched, even if suspect, so
        # that quarantine keeps all that came.
        with self.vault.incoming() if stored or is_segment else nullcontext() as incoming:
            if incoming is not None:
                self._download(seq, stored, incoming, result, progress)
            if fields is not None and problem is None:
                try:
                    if is_segment:
                        assert incoming is not None
                        verify_data(fields, incoming.sha256, incoming.size)
                    elif incoming is not None:
                        raise EvidenceError("malformed", f"{fields['kind']} record with data")
                except EvidenceError as exc:
                    problem = exc
            if problem is not None or fields is None:
                assert problem is not None
                self._quarantine(seq, record, incoming, problem.code, problem.detail, result)
                return None
            receipt = self.vault.commit(record, fields, incoming)
        result.stored.append(seq)
        result.segments += is_segment
        log.info("stored %s record %d", fields["kind"], seq)
        return receipt

    def _quarantine(self, seq: int, record: bytes, incoming: Incoming | None, code: str,
                    detail: str, result: Offload) -> None:
        assert self.identity is not None
        path = self.vault.quarantine(device_id=self.identity.device_id, seq=seq, record=record,
                                     incoming=incoming, code=code, detail=detail)
        log.error("quarantined record %d: %s: %s", seq, code, detail)
        result.quarantined.append({"seq": seq, "code": code, "detail": detail, "path": str(path)})

    def _release(self, seq: int, receipt: bytes, result: Offload) -> None:
        try:
            self.request("release", seq=seq, manifest_sha256=receipt)
        except DeviceError as exc:
            if exc.code != messages.E_UNKNOWN_RECORD:
                raise
            # Asked again after a lost "released": the device had already freed it.
        result.released.append(seq)

    def _download(self, seq: int, size: int, incoming: Incoming, result: Offload,
                  progress: Callable[[int], None]) -> None:
        """Stream [0, size) of a segment into `incoming`, resuming from the last good byte."""
        window = min(READ_WINDOW, int(self._limits().get("max_read", READ_WINDOW)))
        offset = 0
        asked = 0  # end of the byte range requested so far
        inflight = 0
        failures = 0
        rewound_at = -1
        last_read = 0
        while offset < size:
            while inflight < READ_AHEAD and asked < size:
                length = min(window, size - asked)
                last_read = self._send("read", seq=seq, offset=asked, length=length)
                asked += length
                inflight += 1
            payload = self.transport.receive(self.timeout)
            if payload is None:
                failures += 1
                if failures > 5:
                    raise SessionError(f"segment {seq}: no data after {failures} tries")
                log.warning("segment %d: stalled at %d, asking again", seq, offset)
                result.resumed_reads += 1
                asked, inflight = offset, 0  # ZMODEM-style: rewind to the last good byte
                continue
            try:
                kind, body = messages.parse_payload(payload)
            except messages.ProtocolError as exc:
                log.warning("ignored a bad payload: %s", exc)
                continue
            if kind == "data":
                chunk_seq, chunk_off, chunk = body
                if chunk_seq == seq and chunk_off == offset:
                    incoming.write(chunk)
                    offset += len(chunk)
                    result.bytes += len(chunk)
                    failures = 0
                    progress(offset)
                elif chunk_seq == seq and chunk_off > offset and rewound_at != offset:
                    # A chunk was lost on the line: ask again from the gap at once.
                    log.warning("segment %d: gap at %d, asking again", seq, offset)
                    result.resumed_reads += 1
                    rewound_at = offset
                    asked, inflight = offset, 0
                continue
            if body["t"] == "read_done" and body["seq"] == seq:
                inflight = max(0, inflight - 1)
                if body["length"] == 0 and body["offset"] <= offset < size:
                    raise SessionError(f"segment {seq}: device has {offset} of {size} bytes")
                if body["rid"] == last_read and offset < body["offset"] + body["length"]:
                    # The last read is done but bytes before its end never arrived: a chunk
                    # was lost after a rewind. Ask again now rather than wait for a timeout.
                    failures += 1
                    if failures > 5:
                        raise SessionError(f"segment {seq}: data lost {failures} times")
                    log.warning("segment %d: reads done short at %d, asking again", seq, offset)
                    result.resumed_reads += 1
                    rewound_at = offset
                    asked, inflight = offset, 0
            elif body["t"] == "error":
                raise DeviceError(body["code"], body["detail"])

    def _limits(self) -> dict[str, Any]:
        return self.identity.limits if self.identity else {}


@dataclass
class DockReport:
    device_id: str
    firmware: str
    key_fingerprint: str
    newly_enrolled: bool
    clock: dict[str, Any]
    offload: dict[str, Any]
    readiness: dict[str, Any]
    vault: str
    policy: dict[str, Any] = field(default_factory=dict)
    phases: list[dict[str, Any]] = field(default_factory=list)
    docking_id: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dock(
    session: DockSession, progress: Progress | None = None, policy: bytes | None = None
) -> DockReport:
    """The whole docking, in the order the rules want it, recorded in the vault's log."""
    from host_agent import timeline

    ident = session.identify()
    sync = session.sync_clock()
    policy_result: dict[str, Any] = {}
    if policy is not None:
        try:
            policy_result = {"adopted": session.push_policy(policy)}
        except DeviceError as exc:
            policy_result = {"rejected": str(exc)}
    off = session.offload(progress)
    ready = session.check_readiness(sync)
    report = DockReport(
        device_id=ident.device_id,
        firmware=ident.firmware,
        key_fingerprint=ident.fingerprint,
        newly_enrolled=ident.newly_enrolled,
        clock=asdict(sync),
        offload={
            "stored": off.stored,
            "segments": off.segments,
            "released": off.released,
            "quarantined": off.quarantined,
            "bytes": off.bytes,
            "seconds": round(off.seconds, 3),
            "mb_per_s": round(off.mb_per_s, 2),
            "resumed_reads": off.resumed_reads,
        },
        readiness={"ready": ready.ready, "reasons": ready.reasons, "status": ready.status},
        vault=str(session.vault.root),
        policy=policy_result,
        phases=[
            p.to_dict()
            for p in timeline.device_timeline(session.vault, ident.device_id)
            if set(p.segments + [e["seq"] for e in p.events]) & set(off.stored)
        ],
    )
    report.docking_id = session.vault.log_docking(report.to_dict())
    return report
