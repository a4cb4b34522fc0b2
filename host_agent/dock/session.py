"""One docking of one recorder: identify, prove authority, sync the clock, offload into the
vault, check readiness.

The dock proves its authority to the recorder with the unit's certificate and a signature over
fresh nonces, and the recorder proves it holds its enrolled key (protocol/authority.py);
nothing else is asked before that. The session speaks protocol/messages.py over any Transport
and moves bytes; what each record
is (evidence, quarantine, already held) is decided by the vault's ingest step
(host_agent/vault/ingest.py), which the session asks about every record before and after
fetching its data. Nothing is released on the device until the vault holds it durably: the
release carries a receipt the dock signs (device, seq, record hash, status, the vault's log
index), logged in the vault before it is sent. At the end the recorder signs a statement of
its chain head, which the vault logs too.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from host_agent.dock import clocksync
from host_agent.dock.exchange import DeviceError, Exchange, SessionError
from host_agent.dock.fetch import CHUNK_MAX, OVERHEAD, Fetch, limit
from host_agent.dock.readiness import Readiness, Thresholds, assess
from host_agent.keys import DockIdentity, verify
from host_agent.transport import Transport, TransportError
from host_agent.vault import Intake, Outcome, Plan, Vault, key_id, timeline
from host_agent.vault import ingest as ingest_rules
from protocol import authority, manifest, messages, policy, schema

log = logging.getLogger("bodycam.dock")

_JUNK_BYTES = 4 << 20  # bytes that moved nothing, tolerated since the last new byte
HELLO_WAIT_S = 0.25  # the first wait for a hello's answer; doubled while nothing comes, to 1 s
_DEADLINE_BASE_S = 60.0  # a download's deadline: this plus its size at the slowest rate
_DEADLINE_MIN_RATE = 20_000  # bytes/s: slower than a 256 kbit/s UART
_LIST_MAX = 1_000_000  # records one docking takes from a recorder's listing
_LIST_ITEM = (("seq", schema.INT, 1, schema.U32), ("record_sha256", schema.BYTES, 32, 32),
              ("size", schema.INT, 1, 1 << 16), ("stored", schema.INT, 0, 1 << 48))
_LIST_ITEM_WIRE = 64  # bytes a listed item takes in an answer, about


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
    resumed_reads: int = 0  # times the reads in flight went quiet and holes were asked again
    repeats: int = 0  # ranges asked for again
    data_seconds: float = 0.0  # of `seconds`, fetching segment data (not records, releases)

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
        identity: DockIdentity,
        *,
        policy_doc: dict[str, Any] | None = None,
        enroll_unknown: bool = False,
        expect_fingerprint: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.transport = transport
        self.vault = vault
        self.dock = identity
        self.dock_id = identity.dock_id
        self.policy_doc = policy_doc or policy.annex()  # the unit policy: duty thresholds
        self.enroll_unknown = enroll_unknown  # trust an unknown recorder on first sight (lab)
        self.expect_fingerprint = expect_fingerprint  # ... or only with this key fingerprint
        self.exchange = Exchange(transport, timeout)  # requests, repeats, the line model
        self.stall_s = max(5.0, 10 * timeout)  # a download without a new byte this long ends
        self.identity: Identity | None = None

    @property
    def timeout(self) -> float:
        return self.exchange.timeout

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        self.exchange.timeout = seconds

    def request(self, mtype: str, timeout: float | None = None, once: bool = False,
                **fields: Any) -> dict[str, Any]:
        """Ask the recorder until it answers (host_agent/dock/exchange.py)."""
        return self.exchange.request(mtype, timeout, once, **fields)

    # -- steps ------------------------------------------------------------------------------
    def identify(self, wait: float = 30.0) -> Identity:
        """Say hello until the recorder answers (it may still be booting or recording), then
        prove the dock's authority and have the recorder prove it holds its enrolled key."""
        deadline = time.monotonic() + wait
        # Each hello gets a fresh nonce, so it is asked again, not repeated: soon when the
        # answer came damaged (a noisy line), later each time nothing came (a recorder booting).
        hello_wait = min(HELLO_WAIT_S, self.timeout)
        while True:
            heard = self.transport.bytes_in
            try:
                reply = self.request("hello", timeout=hello_wait, once=True,
                                     proto=messages.PROTOCOL_VERSION, dock=self.dock_id)
                ident = Identity(reply["device_id"], reply["fw"], reply["public_key"],
                                 reply["limits"])
                key = self._trusted_key(ident, reply["unit"])
                self._authenticate(ident.device_id, reply["nonce"], key)
                break
            except DeviceError as exc:
                if exc.code != messages.E_BUSY or time.monotonic() > deadline:
                    raise SessionError(f"recorder refused the dock: {exc}") from None
                time.sleep(0.3)  # the recorder takes one handshake at a time
            except TransportError:
                if time.monotonic() > deadline:
                    raise SessionError(f"no recorder answered on {self.transport.name}") from None
                hello_wait = (min(1.0, self.timeout, 2 * hello_wait)
                              if self.transport.bytes_in == heard else
                              min(HELLO_WAIT_S, self.timeout))
        if self.vault.public_key(ident.device_id) is None:
            self.vault.enroll(ident.device_id, ident.public_key, by=self.dock_id,
                              note="enrolled at first docking (key proved in the handshake)")
            ident.newly_enrolled = True
        self.identity = ident
        log.info("identified %s fw %s key %s", ident.device_id, ident.firmware, ident.fingerprint)
        return ident

    def _trusted_key(self, ident: Identity, unit: bytes) -> bytes:
        """The key the recorder must prove it holds: its enrolled one (or, with
        enroll_unknown, the one it shows); SessionError if it may not be docked here."""
        if unit != authority.key_id(self.dock.unit_public):
            raise SessionError(
                f"recorder {ident.device_id} is "
                + (f"commissioned to another unit (key id {unit.hex()})" if unit else
                   "not commissioned to a unit: commission it with the unit's public key")
            )
        enrolled = self.vault.public_key(ident.device_id)
        if enrolled is None:
            expected = (self.expect_fingerprint or "").lower()
            if expected and expected != ident.fingerprint:
                raise SessionError(
                    f"recorder {ident.device_id} shows key {ident.fingerprint}, not the"
                    f" expected {expected}: not enrolled")
            if not (self.enroll_unknown or expected):
                raise SessionError(
                    f"recorder {ident.device_id} (key {ident.fingerprint}) is not enrolled; "
                    "check the key fingerprint on the device, then run `bodycam enroll`"
                )
            return ident.public_key
        if enrolled != ident.public_key:
            raise SessionError(
                f"recorder {ident.device_id} presents key {ident.fingerprint}, "
                f"not its enrolled key {key_id(enrolled).hex()}: refusing it"
            )
        return enrolled

    def _authenticate(self, device_id: str, device_nonce: bytes, device_key: bytes) -> None:
        nonce = os.urandom(authority.NONCE_SIZE)
        proof = authority.dock_proof(device_id, device_nonce, nonce, self.dock.cert)
        reply = self.request("auth", cert=self.dock.cert, nonce=nonce, sig=self.dock.sign(proof))
        expected = authority.device_proof(device_id, device_nonce, nonce, self.dock.public_key)
        if not verify(device_key, expected, reply["sig"]):
            raise SessionError(f"recorder {device_id} did not prove it holds its key"
                               f" {key_id(device_key).hex()}: a clone? refusing it")

    def _measure(self, count: int) -> clocksync.Sample:
        samples = []
        for _ in range(count):
            t1 = clocksync.host_now_us()
            reply = self.request("ping", t1=t1)
            t4 = clocksync.host_now_us()
            samples.append(clocksync.Sample(t1, reply["t2"], reply["t3"], t4))
        return clocksync.best(samples)

    def sync_clock(self, burst: int = 16) -> clocksync.SyncResult:
        """Measure, step the recorder's clock (it signs the step as an event), measure again."""
        before = self._measure(burst)
        reply = self.request("clock_adjust", delta_us=-before.offset_us,
                             uncertainty_us=before.bound_us)
        after = self._measure(burst)
        result = clocksync.SyncResult(before.offset_us, before.bound_us, after.offset_us,
                                      after.bound_us, -before.offset_us, 2 * burst,
                                      reply["event"])
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
                      Thresholds.from_policy(self.policy_doc),
                      firmware=self.identity.firmware if self.identity else None)

    # -- offload ------------------------------------------------------------------------------
    def list_records(self) -> list[dict[str, Any]]:
        """Every record the recorder holds, in seq order, each item checked (seq, the signed
        record's bytes, how many data bytes it holds); SessionError for a listing that is
        malformed, goes backwards or never ends."""
        items: list[dict[str, Any]] = []
        from_seq = 1
        while True:
            # As many items as the line carries in one frame (64 at most).
            limit = max(1, min(64, self.exchange.line.chunk() // _LIST_ITEM_WIRE))
            reply = self.request("list", from_seq=from_seq, limit=limit)
            for item in reply["items"]:
                bad = schema.violation(item, _LIST_ITEM) if isinstance(item, dict) else ("item",
                                                                                        "map")
                if bad is not None:
                    raise SessionError(f"the recorder's listing is malformed: {bad[0]} {bad[1]}")
                if item["seq"] < from_seq:
                    raise SessionError(f"the recorder's listing goes back to record {item['seq']}")
                from_seq = item["seq"] + 1
                items.append(item)
            if len(items) > _LIST_MAX:
                raise SessionError(f"the recorder lists more than {_LIST_MAX} records")
            if not reply["more"] or not reply["items"]:
                return items

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
                seq, stored = int(item["seq"]), int(item["stored"])
                record = self._fetch_record(seq, item["size"], item["record_sha256"], result)
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
                    self._release(outcome, result)
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
                    self._download(plan.seq, plan.fetch, incoming.write, result, progress)
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

    def _release(self, outcome: Outcome, result: Offload) -> None:
        """Tell the recorder it may free a record, with a receipt the dock signs and the vault
        logs first: the vault can prove every free, the recorder keeps the receipt."""
        ident = self.identity
        assert ident is not None
        seq = outcome.seq
        in_chain = self.vault.stored_record_hash(ident.device_id, seq) == outcome.receipt
        status = authority.STATUS_STORED if in_chain else authority.STATUS_QUARANTINED
        signed = authority.sign_statement(
            authority.receipt(ident.device_id, seq, outcome.receipt, status, outcome.log_index,
                              self.dock_id), authority.key_id(self.dock.public_key),
            self.dock.sign)
        self.vault.record_fact("receipt", {"device_id": ident.device_id, "seq": seq,
                                           "statement": signed})
        try:
            self.request("release", seq=seq, manifest_sha256=outcome.receipt, receipt=signed)
        except DeviceError as exc:
            if exc.code != messages.E_UNKNOWN_RECORD:
                raise
            # Asked again after a lost "released": the device had already freed it.
        result.released.append(seq)

    def head_statement(self) -> dict[str, Any]:
        """The recorder signs its chain head (last seq and record hash) over a fresh nonce; the
        vault logs the statement. Says whether it fits what the vault holds."""
        ident = self.identity
        assert ident is not None
        nonce = os.urandom(authority.NONCE_SIZE)
        statement = self.request("head", nonce=nonce)["statement"]
        try:
            doc = authority.open_statement(statement, ident.public_key, verify,
                                           authority.TYPE_HEAD)
        except authority.AuthorityError as exc:
            raise SessionError(f"recorder {ident.device_id}: head statement: {exc}") from None
        if (doc.get("device"), doc.get("nonce"), doc.get("dock")) != (
                ident.device_id, nonce, self.dock_id):
            raise SessionError(f"recorder {ident.device_id}: the head statement is not for"
                               " this session")
        self.vault.record_fact("head", {"device_id": ident.device_id, "seq": doc["seq"],
                                        "record": doc["record"], "statement": statement})
        held = self.vault.stored_record_hash(ident.device_id, doc["seq"])
        last, _ = self.vault.head(ident.device_id)
        if doc["seq"] < last:
            detail = (f"the recorder's chain ends at record {doc['seq']}, before record {last}"
                      " the vault holds: restored from an old copy?")
        elif held is not None and held != doc["record"]:
            detail = f"the recorder's record {doc['seq']} is not the one the vault holds: a fork"
        else:
            detail = ""
        return {"seq": doc["seq"], "record": doc["record"].hex(), "consistent": not detail,
                "detail": detail}

    def _fetch_record(self, seq: int, size: int, sha256: bytes, result: Offload) -> bytes:
        """The signed record `seq`, read in chunks like segment data, and checked to be the one
        the listing named."""
        record = bytearray()
        self._download(seq, size, record.extend, result, lambda n: None, part="record")
        if manifest.record_hash(bytes(record)) != sha256:
            raise SessionError(f"the recorder's record {seq} is not the one it listed")
        return bytes(record)

    def _download(self, seq: int, size: int, write: Callable[[Any], Any], result: Offload,
                  progress: Callable[[int], None], part: str = "data") -> None:
        """Fetch [0, size) of a segment's data (or, `part` "record", of its signed record) and
        `write` it in order (host_agent/dock/fetch.py: selective repeat, chunks sized to the
        line), asking again for what a noisy line lost until it is all in.

        Takes at most `size` bytes. A recorder that has fewer ends the download short (the
        ingest step then judges what came). A peer that answers with chunks nobody asked for
        (repeated, out of the window, of another record) or goes quiet runs out of patience,
        never the dock out of time or disk: SessionError after _JUNK_BYTES of data that moved
        nothing since the last new byte, after `stall_s` without a new byte, or past a deadline
        that grows with the size.
        """
        fetch = Fetch(size, self.exchange.line, int(self._limits().get("chunk", CHUNK_MAX)))
        started = moved_at = time.monotonic()
        junk = 0
        while not fetch.complete:
            now = time.monotonic()
            # The deadline grows with the data moved (the signed sizes, not what a recorder
            # claims to hold), at the slowest rate a line as noisy as this one may bring.
            deadline = started + _DEADLINE_BASE_S + size / (
                _DEADLINE_MIN_RATE * max(0.05, limit(self.exchange.line.ber) / limit(0.0)))
            self.exchange.give_up_at = max(self.exchange.give_up_at, deadline)
            if now > deadline:
                raise SessionError(f"segment {seq}: not received within its deadline"
                                   f" ({fetch.front} of {size} bytes)")
            if now - moved_at > self.stall_s:
                raise SessionError(f"segment {seq}: stalled: no new byte for"
                                   f" {now - moved_at:.1f} s (at byte {fetch.front} of {size})")
            for ask in fetch.next_reads():
                (start, end), *more = ask.ranges
                fields: dict[str, Any] = {"seq": seq, "offset": start, "length": end - start,
                                          "chunk": ask.chunk}
                if more:
                    fields["more"] = [[a, b - a] for a, b in more]
                rid = self.exchange.send("read" if part == "data" else "read_record", **fields)
                fetch.sent(rid, ask)
            payload = self.transport.receive(self._quiet_wait(fetch, started))
            if payload is None:
                if fetch.inflight:
                    self.exchange.warn("segment %d: quiet at %d; asking again for what is"
                                       " missing", seq, fetch.front)
                    result.resumed_reads += 1
                fetch.on_quiet()
                continue
            try:
                kind, body = messages.parse_payload(payload)
            except messages.ProtocolError as exc:
                junk += len(payload)
                self.exchange.warn("ignored a bad payload: %s", exc)
            else:
                if kind in ("data", "record"):
                    chunk_seq, chunk_off, data = body
                    seen = fetch.duplicates
                    pieces = (fetch.on_chunk(chunk_off, data)
                              if chunk_seq == seq and kind == part else [])
                    if pieces:
                        for piece in pieces:
                            write(piece)
                            if part == "data":
                                result.bytes += len(piece)
                        moved_at = time.monotonic()
                        junk = 0
                        progress(fetch.front)
                    elif chunk_seq != seq or fetch.duplicates > seen:
                        junk += len(payload)  # another record's, or again what came already
                elif body["t"] == "read_done" and body["seq"] == seq:
                    fetch.on_done(body["rid"], body["length"])
                elif body["t"] == "error":
                    raise DeviceError(body["code"], body["detail"])
                else:
                    junk += len(payload)
            if junk > _JUNK_BYTES:
                raise SessionError(f"segment {seq}: the recorder keeps sending what was not"
                                   f" asked for ({junk} bytes since byte {fetch.front})")
        result.repeats += fetch.repeats
        if part == "data":
            result.data_seconds += time.monotonic() - started

    @property
    def line_ber(self) -> float:
        """The bit-error rate this docking's losses suggest (0 on a clean line)."""
        return self.exchange.line.ber

    def _quiet_wait(self, fetch: Fetch, started: float) -> float:
        """How long nothing may arrive before the reads in flight count as answered as far as
        they will be: a few round trips plus two chunks at the rate data has come so far."""
        elapsed = time.monotonic() - started
        rate = fetch.front / elapsed if fetch.front and elapsed > 0 else 100_000.0
        wire = 2 * (fetch.chunk() + OVERHEAD)
        return min(self.timeout, self.exchange.rto() + wire / max(rate, 1e4))

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
    head: dict[str, Any] = field(default_factory=dict)  # the recorder's signed chain head
    dock: str = ""
    docking_id: int = 0
    checkpoint: str = ""  # the vault's signed checkpoint after this docking (C2SP note)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dock(
    session: DockSession, progress: Progress | None = None, policy_file: bytes | None = None,
    on_identified: Callable[[str], None] | None = None,
) -> DockReport:
    """The whole docking, in the order the rules want it, recorded in the vault's log.

    `policy_file` is the unit's signed policy: delivered to the recorder (which checks the
    unit's signature itself), and the source of the dock's duty thresholds.
    `on_identified(device_id)` runs once the recorder proved who it is, before anything else
    is asked of it (the daemon takes the recorder's lock there; raising stops the docking).
    """
    ident = session.identify()
    if on_identified is not None:
        on_identified(ident.device_id)
    sync = session.sync_clock()
    policy_result: dict[str, Any] = {}
    if policy_file is not None:
        session.policy_doc = policy.read_signed(policy_file)
        try:
            policy_result = {"adopted": session.push_policy(policy_file)}
        except DeviceError as exc:
            policy_result = {"rejected": str(exc)}
    off = session.offload(progress)
    head = session.head_statement()
    ready = session.check_readiness(sync)
    if not head["consistent"]:
        ready.ready = False
        ready.reasons.append(head["detail"])
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
            "data_seconds": round(off.data_seconds, 3),
            "mb_per_s": round(off.mb_per_s, 2),
            "resumed_reads": off.resumed_reads,
            "repeats": off.repeats,
            "line_ber": session.line_ber,
            "staged_requests": session.exchange.staged,  # requests that went in parts
        },
        readiness={"ready": ready.ready, "reasons": ready.reasons, "status": ready.status},
        vault=str(session.vault.root),
        policy=policy_result,
        head=head,
        dock=session.dock_id,
        phases=[
            p.to_dict()
            for p in timeline.device_timeline(session.vault, ident.device_id)
            if set(p.segments + [e["seq"] for e in p.events]) & set(off.stored)
        ],
    )
    report.docking_id = session.vault.log_docking(report.to_dict())
    report.checkpoint = session.vault.checkpoint(session.dock).decode()
    return report
