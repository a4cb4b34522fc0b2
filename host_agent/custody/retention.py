"""Retention: the only way footage ever leaves the vault.

Footage is kept at least `MIN_DAYS` (six months) from when the vault stored it, and for good
when it is in a case (its signed phase names one, or the register marked it as evidence in
one), or under a hold (on the record or on any of its cases). The job removes a segment's
bytes only when all of that is clear and the recorder was given the dock's release receipt for
it (so no copy is still waiting on a card). The signed record stays: the chain stays whole and
provable, and says what was recorded and that it was removed.

Each removal is a register row (what = "retention", subject record/<device>/<seq>: the
object's SHA-256 and size, when it was stored, the rule) committed before the file is
unlinked; a run cut short leaves rows whose files are still there, which the next run removes.
A vault that forwards to the central tier keeps everything the central has not cosigned yet,
and bytes that are also a case's hall footage stay.
`verify` takes a missing object as lawful only when such a row names it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from host_agent.central.forward import COSIGNED
from host_agent.custody import hall, times
from host_agent.custody import items as itemlib
from host_agent.custody.register import CustodyError, RecordRef, Register, check_name
from host_agent.vault.files import fsync_dir

if TYPE_CHECKING:
    from host_agent.vault import Vault

MIN_DAYS = 183
DAY_US = 86_400_000_000


@dataclass
class Outcome:
    removed: list[dict[str, Any]] = field(default_factory=list)
    kept: dict[str, int] = field(default_factory=dict)  # reason -> records kept for it

    def keep(self, reason: str) -> None:
        self.kept[reason] = self.kept.get(reason, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        return {"removed": self.removed, "kept": self.kept,
                "bytes_removed": sum(int(r["size"]) for r in self.removed)}


def released(vault: Vault) -> set[tuple[str, int]]:
    """(device, seq) of every record the dock gave the recorder a release receipt for."""
    out = set()
    for fact in vault.facts("receipt"):
        fields = fact["fields"]
        if isinstance(fields, dict):
            out.add((str(fields.get("device_id")), int(fields.get("seq") or 0)))
    return out


def removed_objects(vault: Vault) -> dict[str, str]:
    """subject (record/<device>/<seq>) -> object hex, of every removal registered."""
    return {str(r["subject"]): str(r["fields"]["object"])
            for r in vault.custody(what="retention")}


def run(vault: Vault, *, by: str, as_of_us: int | None = None, keep_days: int = MIN_DAYS,
        dry_run: bool = False, clock: Callable[[], int] = times.now_us) -> Outcome:
    """Remove what retention allows, judged as at `as_of_us` (default: now by `clock`); a
    `dry_run` only says what would go, and only a dry run may look into the future."""
    check_name(by, "--by")
    if keep_days < MIN_DAYS:
        raise CustodyError(f"footage is kept at least {MIN_DAYS} days (six months); refusing"
                           f" {keep_days}")
    as_of = clock() if as_of_us is None else as_of_us
    if as_of > clock() + DAY_US and not dry_run:
        raise CustodyError("--as-of lies in the future: only a --dry-run may look ahead")
    register = Register(vault)
    out = Outcome()
    gone = removed_objects(vault)
    freed = released(vault)
    rows = vault.db.execute(
        "SELECT device_id, seq, segment_sha256, size, stored_at FROM records"
        " WHERE kind = 'segment' AND data_state = 'stored' ORDER BY device_id, seq").fetchall()
    by_object: dict[bytes, list[tuple[RecordRef, int, str]]] = {}
    for device_id, seq, sha, size, stored_at in rows:
        by_object.setdefault(bytes(sha), []).append(
            (RecordRef(str(device_id), int(seq)), int(size), str(stored_at)))
    hall_bytes = set(hall.objects(vault))
    central = forwarded_up_to(vault)
    for sha, refs in by_object.items():
        # the bytes go only when every record they belong to goes
        left = [r for r in refs if f"record/{r[0]}" not in gone]
        keep = [reason for ref, _, stored_at in left if (reason := _keep_reason(
            vault, register, ref, stored_at, as_of, keep_days, freed, central))]
        if sha.hex() in hall_bytes and left and not keep:
            keep = ["its bytes are also hall footage of a case"] * len(left)
        for reason in keep:
            out.keep(reason)
        if keep and len(keep) < len(left):
            for _ in range(len(left) - len(keep)):
                out.keep("its bytes are also a kept record's")
        if keep:
            continue
        for ref, size, stored_at in left:
            entry = {"record": str(ref), "object": sha.hex(), "size": size,
                     "stored_at": stored_at, "rule": f"stored more than {keep_days} days"
                     " before the run, in no case, not held, released by its recorder"}
            if not dry_run:
                vault.append_custody("retention", by, f"record/{ref}",
                                     {**entry, "as_of": times.iso(as_of)})
            out.removed.append(entry)
        if not dry_run:
            _finish(vault, sha)  # also the files of a run cut short after its rows
    return out


def forwarded_up_to(vault: Vault) -> int | None:
    """How many log entries the central tier cosigned (VAULT/cosigned/, kept by forwarding);
    None when this vault does not forward."""
    folder = vault.root / COSIGNED
    if not folder.is_dir():
        return None
    sizes = [int(p.stem) for p in folder.glob("*.note") if p.stem.isdigit()]
    return max(sizes, default=0)


def _keep_reason(vault: Vault, register: Register, ref: RecordRef, stored_at: str,
                 as_of: int, keep_days: int, freed: set[tuple[str, int]],
                 central: int | None) -> str | None:
    if as_of - times.parse(stored_at) < keep_days * DAY_US:
        return f"younger than {keep_days} days"
    if (ref.device_id, ref.seq) not in freed:
        return "not yet released by its recorder"
    if central is not None:
        index = vault.log_index(f"records/{ref.device_id}/{ref.seq}")
        if index is None or index >= central:
            return "not yet held by the central tier"
    cases = itemlib.cases_of(vault, register, ref)
    if register.held(f"record/{ref}") or any(register.held(f"case/{c}") for c in cases):
        return "under a hold"
    if cases:
        return "in a case"
    return None


def _finish(vault: Vault, sha: bytes) -> None:
    path = vault.object_path(sha)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
        fsync_dir(path.parent)
