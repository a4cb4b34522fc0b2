"""One docking of one recorder: identify, sync the clock, offload into the vault, check readiness.

The session speaks protocol/messages.py over any Transport and moves bytes; what each record
is (evidence, quarantine, already held) is decided by the vault's ingest step
(host_agent/vault/ingest.py), which the session asks about every record before and after
fetching its data. Nothing is released on the device until the vault holds it durably, and the
release names the exact record hash.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from host_agent.dock import clocksync
from host_agent.dock.readiness import Readiness, Thresholds, assess
from host_agent.transport import Transport, TransportError
from host_agent.vault import Incoming, Intake, Outcome, Plan, Vault, key_id, timeline
from host_agent.vault import ingest as ingest_rules
from protocol import messages, policy

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
class Offload:
    stored: list[int] = field(default_factory=list)
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    released: list[int] = field(default_factory=list)
    held: list[dict[str, Any]] = field(default_factory=list)  # left on the recorder, and why
    chain_breaks: list[dict[str, Any]] = field(default_factory=list)
    segments: int = 0
    bytes: int = 0
    seconds: float = 0.0
    started: float = 0.0  # wall clock (time.time()) when the offload began and ended
    finished: float = 0.0
    resumed_reads: int = 0

    def note(self, outcome: Outcome, is_segment: bool) -> None:
        if outcome.status == ingest_rules.STORED:
            self.stored.append(outcome.seq)
            self.segments += is_segment
            if outcome.chain_break:
                self.chain_breaks.append({"seq": outcome.seq, "detail": outcome.chain_break})
        if outcome.code and outcome.status in (ingest_rules.STORED, ingest_rules.QUARANTINED):
            self.quarantined.append({"seq": outcome.seq, "code": outcome.code,
                                     "detail": outcome.detail, "path": outcome.path,
                                     "record_stored": outcome.status == ingest_rules.STORED})
        if outcome.status == ingest_rules.KEPT_ON_DEVICE:
            self.held.append(outcome.to_dict())

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
        policy_doc: dict[str, Any] | None = None,
        enroll_unknown: bool = False,
        timeout: float = 5.0,
    ) -> None:
        self.transport = transport
        self.vault = vault
        self.dock_id = dock_id
        self.policy_doc = policy_doc or policy.annex()  # the unit policy: duty thresholds
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
        return assess(self.request("get_status"), sync,
                      Thresholds.from_policy(self.policy_doc))

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
        """Offer every record on the device, in chain order, to the vault's ingest step; fetch
        what it asks for, and release on the device what it then holds."""
        ident = self.identity
        if ident is None:
            raise SessionError("identify first")
        result = Offload(started=time.time())
        t0 = time.monotonic()
        try:
            items = self.list_records()
            total = sum(max(0, int(it["stored"])) for it in items)
            intake = self.vault.intake(ident.device_id)
            done = 0
            for item in items:
                seq, record, stored = int(item["seq"]), bytes(item["record"]), int(item["stored"])
                plan = intake.examine(seq, record, stored)

                def step(n: int, base: int = done) -> None:
                    if progress:
                        progress(base + n, total)

                outcome = self._take(intake, plan, result, step)
                done += max(0, stored)
                is_segment = plan.fields is not None and plan.fields["kind"] == "segment"
                result.note(outcome, is_segment)
                self._log_outcome(outcome)
                if outcome.release:
                    self._release(seq, outcome.receipt, result)
        finally:
            result.seconds = time.monotonic() - t0
            result.finished = time.time()
        return result

    def _take(self, intake: Intake, plan: Plan, result: Offload,
              progress: Callable[[int], None]) -> Outcome:
        """Fetch what the plan asks for and let the ingest step conclude (reading again once
        when it asks to)."""
        while True:
            if not plan.fetch:
                outcome = intake.conclude(plan, None)
            else:
                with self.vault.incoming() as incoming:
                    self._download(plan.seq, plan.fetch, incoming, result, progress)
                    outcome = intake.conclude(plan, incoming)
            if outcome.status != ingest_rules.REREAD:
                return outcome
            log.warning("record %d: %s; reading it again", plan.seq, outcome.detail)

    def _log_outcome(self, o: Outcome) -> None:
        if o.status == ingest_rules.QUARANTINED or o.code:
            log.error("record %d %s: %s: %s", o.seq, o.status, o.code, o.detail)
        elif o.status == ingest_rules.KEPT_ON_DEVICE:
            log.warning("record %d left on the recorder: %s", o.seq, o.detail)
        else:
            log.info("record %d %s%s", o.seq, o.status,
                     f" after a chain break: {o.chain_break}" if o.chain_break else "")

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
    session: DockSession, progress: Progress | None = None, policy_file: bytes | None = None
) -> DockReport:
    """The whole docking, in the order the rules want it, recorded in the vault's log.

    `policy_file` is the unit's signed policy: delivered to the recorder (which checks the
    unit's signature itself), and the source of the dock's duty thresholds.
    """
    ident = session.identify()
    sync = session.sync_clock()
    policy_result: dict[str, Any] = {}
    if policy_file is not None:
        session.policy_doc = policy.read_signed(policy_file)
        try:
            policy_result = {"adopted": session.push_policy(policy_file)}
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
            "held": off.held,
            "chain_breaks": off.chain_breaks,
            "bytes": off.bytes,
            "started": off.started,
            "finished": off.finished,
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
