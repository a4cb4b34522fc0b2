"""The one step that decides what a recorder's record is: evidence, or quarantine.

Whatever brings records to the vault (the dock session, a card reader, a test) asks an
`Intake`, one per recorder, about each record the recorder offers, and does nothing else
with it:

    intake = vault.intake(device_id)
    plan = intake.examine(seq, record, stored)     # before any data moves
    with vault.incoming() as incoming:             # if plan.fetch: download plan.fetch bytes
        outcome = intake.conclude(plan, incoming)  # stored or quarantined, durably
    if outcome.status == REREAD: download again and conclude again
    if outcome.release: the recorder may free it; outcome.receipt is the record's hash and
        outcome.log_index the vault's log entry that holds it (for the dock's signed receipt)

`offer(seq, record, data)` does all of that for data already in memory.

The rules, in the order they are applied:

1. The vault quarantined this exact record already: nothing is fetched or kept again; release
   it if that quarantine holds everything the recorder offered, else it stays on the recorder.
2. The vault holds this exact record already: nothing to fetch; release it (the last release
   was lost on the way).
3. The record must be authentic: a COSE_Sign1 by the device's enrolled key naming the device,
   with only the headers a recorder writes (`evidence.open_record`). If it is not, the record
   is quarantined with at most `suspect_data_max` bytes of its data: a stranger's size is not
   believed.
4. It must be the record the listing says it is (the signed seq), else it is malformed.
5. The vault holds another record under that seq: a fork (`conflict`), quarantined.
6. An authentic record that does not continue the chain the vault holds (records missing before
   it, or another predecessor) is still evidence: it is stored with a `chain_break` saying why,
   so that one lost or forged record does not keep every later one out of the vault.
7. A segment's data is fetched up to its signed size, never more. Bytes that do not match the
   signed size and SHA-256 are read a second time; if the second read gives the same bytes, the
   record is stored (its chain goes on) and the bytes are quarantined beside it; if the reads
   differ, nothing is kept and the record stays on the recorder for the next docking.
8. Events and gaps carry no data: data offered with one is quarantined (bounded as in 3) and
   the record itself is stored.

Everything is decided again under the vault's write lock in `conclude`, so a record judged
against a chain head that moved meanwhile is never stored on the old judgement.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from host_agent.vault import evidence
from host_agent.vault.errors import VaultError
from host_agent.vault.evidence import EvidenceError
from host_agent.vault.files import Incoming
from protocol import manifest

if TYPE_CHECKING:
    from host_agent.vault.store import Vault

# Plan.action
TAKE = "take"  # fetch plan.fetch bytes (maybe 0), then conclude
HAVE = "have"  # the vault holds this record: release it
HELD = "held"  # quarantined before and not complete: leave it on the recorder

# Outcome.status
STORED = "stored"
QUARANTINED = "quarantined"
HAD = "had"
KEPT_ON_DEVICE = "held"
REREAD = "reread"  # the data did not match: read it once more and conclude again

SUSPECT_DATA_MAX = 256 << 20  # bytes of data taken with a record that is not authentic
FREE_MARGIN = 8 << 20  # bytes the vault's disk keeps free beyond a segment (index, records)


@dataclass
class Plan:
    """What `examine` decided before any data moved."""

    seq: int
    record: bytes
    record_hash: bytes
    stored: int  # data bytes the recorder says it holds for this record
    action: str
    fetch: int = 0  # data bytes to download (0: none)
    fields: dict[str, Any] | None = None  # the signed manifest, when the record is authentic
    problem: EvidenceError | None = None  # why the record itself goes to quarantine
    chain_break: str | None = None
    first_read: tuple[bytes, int] | None = None  # (sha256, size) of a read that did not match
    note: str = ""
    log_index: int = -1  # HAVE/HELD: the log entry of the record (or quarantine) already held


@dataclass
class Outcome:
    """What became of one record."""

    seq: int
    status: str
    receipt: bytes  # the record's hash: what a release names
    release: bool  # the recorder may free it
    code: str = ""
    detail: str = ""
    chain_break: str | None = None
    data_quarantined: bool = False
    path: str = ""  # the quarantine directory, if any
    # The vault's log entry holding the record: its records entry when stored (also "had"),
    # else the quarantine entry holding it; -1 when the vault holds nothing of it (reread, or
    # two reads that differed). Always >= 0 when `release` is True.
    log_index: int = -1

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"seq": self.seq, "status": self.status, "code": self.code,
                             "detail": self.detail}
        if self.chain_break:
            d["chain_break"] = self.chain_break
        if self.path:
            d["path"] = self.path
        if self.log_index >= 0:
            d["log_index"] = self.log_index
        return d


class Intake:
    """The ingest step for one enrolled recorder. Get one with `Vault.intake(device_id)`."""

    def __init__(self, vault: Vault, device_id: str, public_key: bytes,
                 suspect_data_max: int = SUSPECT_DATA_MAX) -> None:
        self.vault = vault
        self.device_id = device_id
        self.public_key = public_key
        self.suspect_data_max = suspect_data_max

    # -- deciding ------------------------------------------------------------------------------

    def examine(self, seq: int, record: bytes, stored: int) -> Plan:
        """Decide what to do with a record the recorder lists, before fetching its data."""
        record = bytes(record)
        stored = max(0, int(stored))
        plan = self._judge(Plan(seq, record, manifest.record_hash(record), stored, TAKE))
        if plan.action == TAKE and plan.fetch:
            self._check_room(plan.fetch)
        return plan

    def _judge(self, plan: Plan) -> Plan:
        vault, device_id = self.vault, self.device_id
        earlier = vault.quarantine_of(device_id, plan.record_hash)
        if earlier is not None:
            plan.action = HAVE if earlier["complete"] else HELD
            plan.note = f"quarantined before ({earlier['code']}, {earlier['path']})"
            stored = vault.stored_record_hash(device_id, plan.seq) == plan.record_hash
            plan.log_index = self._logged(  # the record's own entry if only its data was kept
                f"records/{device_id}/{plan.seq}" if stored else f"quarantine/{earlier['id']}")
            return plan
        held = vault.stored_record_hash(device_id, plan.seq)
        if held == plan.record_hash:
            plan.action = HAVE
            plan.log_index = self._logged(f"records/{device_id}/{plan.seq}")
            return plan
        plan.action, plan.fields, plan.problem, plan.chain_break = TAKE, None, None, None
        try:
            fields = evidence.open_record(plan.record, self.public_key, device_id)
        except EvidenceError as exc:
            return self._suspect(plan, exc)
        if fields["seq"] != plan.seq:
            return self._suspect(plan, EvidenceError(
                evidence.MALFORMED, f"listed as record {plan.seq}, signed as {fields['seq']}"))
        if held is not None:
            return self._suspect(plan, EvidenceError(
                evidence.CONFLICT, f"record {plan.seq} differs from the one in the vault"))
        head_seq, head_hash = vault.head(device_id)
        if plan.seq < head_seq:
            return self._suspect(plan, EvidenceError(
                evidence.CHAIN_BROKEN, f"record {plan.seq} arrives after record {head_seq}"))
        try:
            evidence.check_link(fields, head_seq + 1, head_hash)
        except EvidenceError:
            plan.chain_break = (
                f"records {head_seq + 1}..{plan.seq - 1} are not in this vault"
                if plan.seq > head_seq + 1 else
                f"does not link to record {head_seq}, the last the vault holds")
        plan.fields = fields
        if fields["kind"] == manifest.KIND_SEGMENT:
            plan.fetch = min(plan.stored, fields["size"]) if plan.stored else 0
            if plan.stored != fields["size"]:
                plan.note = f"recorder holds {plan.stored} bytes, signed size {fields['size']}"
        else:
            plan.fetch = min(plan.stored, self.suspect_data_max)  # stray data, to quarantine
        return plan

    def _logged(self, ref: str) -> int:
        index = self.vault.log_index(ref)
        if index is None:
            raise VaultError(f"{ref} has no log entry; run bodycam vault verify")
        return index

    def _suspect(self, plan: Plan, problem: EvidenceError) -> Plan:
        plan.problem = problem
        plan.fetch = min(plan.stored, self.suspect_data_max)
        return plan

    def _check_room(self, nbytes: int) -> None:
        free = shutil.disk_usage(self.vault.root).free
        if free < nbytes + FREE_MARGIN:
            raise VaultError(f"vault disk full: {free >> 20} MiB free, a segment of "
                             f"{nbytes >> 20} MiB needs {(nbytes + FREE_MARGIN) >> 20} MiB")

    # -- storing -------------------------------------------------------------------------------

    def conclude(self, plan: Plan, incoming: Incoming | None) -> Outcome:
        """Store or quarantine the record (and `incoming`, the plan.fetch bytes received)."""
        if plan.action == HAVE:
            return Outcome(plan.seq, HAD, plan.record_hash, True, detail=plan.note,
                           log_index=plan.log_index)
        if plan.action == HELD:
            return Outcome(plan.seq, KEPT_ON_DEVICE, plan.record_hash, False, detail=plan.note,
                           log_index=plan.log_index)
        if incoming is not None:
            incoming.seal()  # durable before the write lock is taken
        fields = plan.fields
        if fields is not None and fields["kind"] == manifest.KIND_SEGMENT and plan.problem is None:
            if incoming is None and fields["size"] == 0:  # an empty segment: empty data
                with self.vault.incoming() as empty:
                    return self.conclude(plan, empty)
            if incoming is None:  # the recorder holds no data for this signed segment
                return self._store(plan, None, quarantine=(None, EvidenceError(
                    evidence.SIZE_MISMATCH, f"segment {plan.seq}: the recorder holds no data,"
                    f" manifest says {fields['size']} bytes")))
            got = (incoming.sha256, incoming.size)
            try:
                evidence.verify_data(fields, *got)
            except EvidenceError as exc:
                if plan.first_read is None:
                    plan.first_read = got
                    return Outcome(plan.seq, REREAD, plan.record_hash, False, exc.code, exc.detail)
                if plan.first_read != got:
                    return Outcome(plan.seq, KEPT_ON_DEVICE, plan.record_hash, False, exc.code,
                                   "two reads of the segment gave different bytes; it stays on"
                                   " the recorder")
                return self._store(plan, None, quarantine=(incoming, exc))
            return self._store(plan, incoming, quarantine=None)
        if fields is not None and plan.problem is None:  # an event or gap
            if incoming is None:
                return self._store(plan, None, quarantine=None)
            return self._store(plan, None, quarantine=(incoming, EvidenceError(
                evidence.UNEXPECTED_DATA, f"{fields['kind']} record {plan.seq} came with "
                f"{plan.stored} bytes of data")))
        assert plan.problem is not None
        with self.vault.transaction():
            self._recheck(plan)
            path, index = self.vault._quarantine(
                device_id=self.device_id, seq=plan.seq, record=plan.record, incoming=incoming,
                code=plan.problem.code, detail=plan.problem.detail,
                complete=self._complete(plan, incoming))
        return Outcome(plan.seq, QUARANTINED, plan.record_hash, self._complete(plan, incoming),
                       plan.problem.code, plan.problem.detail, path=self._rel(path),
                       log_index=index)

    def _store(self, plan: Plan, incoming: Incoming | None,
               quarantine: tuple[Incoming | None, EvidenceError] | None) -> Outcome:
        assert plan.fields is not None
        kind = plan.fields["kind"]
        data_state = None
        if kind == manifest.KIND_SEGMENT:
            data_state = "stored"
            if quarantine is not None:
                data_state = "quarantined" if quarantine[0] is not None else "missing"
        vault = self.vault
        path = ""
        with vault.transaction():
            self._recheck(plan)
            if quarantine is not None:
                q_in, problem = quarantine
                qdir, _ = vault._quarantine(
                    device_id=self.device_id, seq=plan.seq, record=plan.record, incoming=q_in,
                    code=problem.code, detail=problem.detail,
                    complete=self._complete(plan, q_in))
                path = self._rel(qdir)
            receipt, index = vault._store_record(plan.record, plan.fields, incoming,
                                                 data_state=data_state,
                                                 chain_break=plan.chain_break)
        release = quarantine is None or self._complete(plan, quarantine[0])
        out = Outcome(plan.seq, STORED, receipt, release, detail=plan.note,
                      chain_break=plan.chain_break, data_quarantined=quarantine is not None,
                      path=path, log_index=index)
        if quarantine is not None:
            out.code, out.detail = quarantine[1].code, quarantine[1].detail
        return out

    def _recheck(self, plan: Plan) -> None:
        """Inside the write lock: the judgement still holds (no one stored meanwhile)."""
        again = self._judge(Plan(plan.seq, plan.record, plan.record_hash, plan.stored, TAKE))
        same = (again.action, again.chain_break, again.problem and again.problem.code) == (
            plan.action, plan.chain_break, plan.problem and plan.problem.code)
        if not same:
            raise VaultError(f"{self.device_id}: record {plan.seq} changed standing while it was"
                             " received (another docking stored records); dock again")

    def _complete(self, plan: Plan, incoming: Incoming | None) -> bool:
        """The vault holds everything the recorder offered with this record, so it may free it:
        all the data it signed (of an authentic segment), or all it offered (of anything
        else, up to `suspect_data_max`)."""
        if (incoming.size if incoming is not None else 0) < plan.fetch:
            return False
        authentic_segment = (plan.problem is None and plan.fields is not None
                             and plan.fields["kind"] == manifest.KIND_SEGMENT)
        return authentic_segment or plan.fetch >= plan.stored

    def _rel(self, path: Any) -> str:
        return str(path.relative_to(self.vault.root).as_posix())

    # -- data in memory ------------------------------------------------------------------------

    def offer(self, seq: int, record: bytes, data: bytes | None = None) -> Outcome:
        """Examine and conclude a record whose data (if any) is at hand."""
        plan = self.examine(seq, record, len(data) if data else 0)
        while True:
            if not plan.fetch:
                outcome = self.conclude(plan, None)
            else:
                assert data is not None
                with self.vault.incoming() as incoming:
                    incoming.write(data[:plan.fetch])
                    outcome = self.conclude(plan, incoming)
            if outcome.status != REREAD:
                return outcome
