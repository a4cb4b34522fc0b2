"""`bodycam custody …` (the records office: people, requests, approvals, classification,
holds, view, copy, export, hall footage, retention, the compliance report) and `bodycam
verify` (an export package, offline)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from host_agent.cli.output import fail, json_default
from host_agent.cli.unit_commands import add_identity_option, load_identity
from host_agent.custody import times
from host_agent.custody.archive import Archive
from host_agent.custody.register import (
    BODIES,
    CLASSES,
    ROLES,
    CustodyError,
    PersonSigner,
    RecordRef,
    Register,
)
from host_agent.keys import KeyFileError, PersonKey, public_key
from host_agent.settings import SettingsError
from host_agent.vault import Vault, VaultError

Result = dict[str, Any] | list[Any]


@contextlib.contextmanager
def open_archive(where: str) -> Iterator[Archive]:
    """A dock's vault (a directory), or the central index (its central.toml)."""
    if where.endswith(".toml"):
        from host_agent.central.archive import open_central

        with open_central(where) as central:
            yield central
    else:
        with Vault.open(where, create=False) as vault:
            yield vault


def at_a_dock(archive: Archive, what: str) -> Vault:
    if not isinstance(archive, Vault):
        raise CustodyError(f"{what} is done at a dock, on its vault, not at the central")
    return archive


def run(args: argparse.Namespace, command: str,
        work: Callable[[Archive], Result], show: Callable[[Any], str] | None = None) -> int:
    """Open the vault or the central index, do the work, print the result (JSON with
    --json); a refusal or bad input is one line on stderr and exit 2, never a traceback."""
    try:
        with open_archive(args.vault) as archive:
            result = work(archive)
    except (CustodyError, VaultError, KeyFileError, SettingsError, OSError) as exc:
        return fail(command, exc)
    if getattr(args, "json", False) or show is None:
        print(json.dumps(result, indent=2, default=json_default, ensure_ascii=False))
    else:
        print(show(result))
    return 0


def actor(args: argparse.Namespace) -> tuple[str, PersonSigner | None]:
    """Who acts: `--as PERSON_DIR` (their key and the unit's certificate: the act is signed)
    or `--by NAME` (a name, registered but not authenticated)."""
    as_dir = getattr(args, "as_dir", None)
    if as_dir and args.by:
        raise CustodyError("give --by NAME or --as PERSON_DIR, not both")
    if as_dir:
        signer = PersonSigner(PersonKey.load(Path(as_dir)))
        return signer.name, signer
    if not args.by:
        raise CustodyError("who acts? give --as PERSON_DIR (or --by NAME)")
    return str(args.by), None


def unit_key_of(args: argparse.Namespace, archive: Archive, command: str) -> bytes | None:
    """The unit's public key that certifies persons: the dock identity's at a dock, the
    central's `unit_key` at the centre."""
    if isinstance(archive, Vault):
        return load_identity(args.identity, command).unit_public
    unit = getattr(archive, "unit_public", None)
    return unit if isinstance(unit, bytes) else None


def _time(text: str) -> int:
    try:
        return times.parse(text)
    except CustodyError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _record(text: str) -> RecordRef:
    try:
        return RecordRef.parse(text)
    except CustodyError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _subject(args: argparse.Namespace) -> str:
    if bool(args.case) == bool(args.record):
        raise CustodyError("name one --case or one --record")
    return f"case/{args.case}" if args.case else f"record/{args.record}"


def _items(args: argparse.Namespace) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = [{"case": c} for c in args.case]
    if args.device:
        if args.start is None or args.end is None:
            raise CustodyError("--device needs --from and --to")
        items.append({"device": args.device, "from_us": args.start, "to_us": args.end})
    if args.record:
        items.append({"records": [str(r) for r in args.record]})
    return items


# -- the register ----------------------------------------------------------------------------


def cmd_person(args: argparse.Namespace) -> int:
    def work(vault: Archive) -> Result:
        by, person = actor(args)
        if args.cert:
            if args.name or args.id_no or args.role or args.clearance:
                raise CustodyError("with --cert the name, ID number, roles and clearance"
                                   " come from the certificate: give none of them")
            try:
                cert = Path(args.cert).read_bytes()
            except OSError as exc:
                raise CustodyError(f"{args.cert}: {exc.strerror}") from None
            register = Register(vault, person=person,
                                unit_public=unit_key_of(args, vault, "custody person"))
            rid, doc = register.add_certified_person(cert, by=by)
            return {"id": rid, "name": doc["name"], "roles": doc["roles"],
                    "clearance": doc["clearance"], "certified": True}
        if not (args.name and args.id_no and args.role):
            raise CustodyError("give --cert FILE, or --name, --id-no and --role")
        rid = Register(vault, person=person).add_person(
            args.name, id_no=args.id_no, roles=args.role, clearance=args.clearance or "none",
            by=by)
        return {"id": rid, "name": args.name, "roles": args.role,
                "clearance": args.clearance or "none", "certified": False}

    return run(args, "custody person", work,
               lambda r: f"registered {r['name']} ({', '.join(r['roles'])}; cleared for"
                         f" {r['clearance']}{'; certified by the unit' if r['certified'] else ''}"
                         f"): register entry #{r['id']}")


def cmd_request(args: argparse.Namespace) -> int:
    from host_agent.custody.items import check_items

    def work(vault: Archive) -> Result:
        items = check_items(_items(args))
        by, person = actor(args)
        rid = Register(vault, person=person).file_request(
            body=args.body, letter=args.letter, requester=args.requester,
            requester_id=args.requester_id, reason=args.reason, items=items, by=by)
        return {"request": rid, "items": items}

    return run(args, "custody request", work,
                lambda r: f"request #{r['request']} filed; it allows nothing until an approver"
                          f" decides (bodycam custody approve {args.vault} {r['request']}"
                          " --as APPROVER_DIR)")


def cmd_decide(args: argparse.Namespace) -> int:
    from host_agent.custody import items as itemlib

    approve = args.custody_command == "approve"

    def work(vault: Archive) -> Result:
        by, person = actor(args)
        register = Register(vault, person=person)
        request = register.request(args.request)
        refs = itemlib.resolve(vault, register, request["items"])
        cls = itemlib.items_class(vault, register, refs,
                                  [i["case"] for i in request["items"] if "case" in i])
        register.decide(args.request, approver=by, approved=approve, note=args.note,
                        items_class=cls)
        return {"request": args.request, "approved": approve, "records": len(refs),
                "class": cls, "by": by}

    return run(args, f"custody {args.custody_command}", work,
                lambda r: f"request #{r['request']} {'approved' if approve else 'refused'} by"
                          f" {r['by']} ({r['records']} records, class {r['class']})")


def cmd_classify(args: argparse.Namespace) -> int:
    def work(vault: Archive) -> Result:
        subject = _subject(args)
        by, person = actor(args)
        Register(vault, person=person).classify(subject, args.cls, by=by, reason=args.reason)
        return {"subject": subject, "class": args.cls}

    return run(args, "custody classify", work, lambda r: f"{r['subject']}: {r['class']}")


def cmd_hold(args: argparse.Namespace) -> int:
    def work(vault: Archive) -> Result:
        subject = _subject(args)
        by, person = actor(args)
        Register(vault, person=person).hold(subject, not args.lift, by=by, reason=args.reason)
        return {"subject": subject, "held": not args.lift}

    return run(args, "custody hold", work,
                lambda r: f"{r['subject']}: {'held' if r['held'] else 'hold lifted'}")


def cmd_evidence(args: argparse.Namespace) -> int:
    def work(vault: Archive) -> Result:
        if vault.stored_record_hash(args.record.device_id, args.record.seq) is None:
            raise CustodyError(f"the vault holds no record {args.record}")
        by, person = actor(args)
        Register(vault, person=person).mark_evidence(args.record, args.case, by=by)
        return {"record": str(args.record), "case": args.case}

    return run(args, "custody evidence", work,
                lambda r: f"{r['record']} is evidence in {r['case']}: kept for good")


def cmd_register(args: argparse.Namespace) -> int:
    def show(rows: list[dict[str, Any]]) -> str:
        lines = []
        for r in rows:
            f = dict(r["fields"])
            items = f.pop("items", None)
            proof = f.pop("proof", None)
            text = ", ".join(f"{k}={v}" for k, v in f.items()
                             if k not in ("statement", "files", "cert", "key"))
            if items:
                text += f", items={len(items)}"
            if proof:
                text += ", signed"
            lines.append(f"#{r['id']} {r['at']} {r['what']:<10} {r['subject']:<24}"
                         f" by {r['actor']}: {text} (log {r['log']})")
        return "\n".join(lines) or "the register is empty"

    return run(args, "custody register", lambda v: Register(v).entries(), show)


# -- acts under a request --------------------------------------------------------------------


def cmd_hand_out(args: argparse.Namespace) -> int:
    from host_agent.custody.export import hand_out

    act = args.custody_command

    def work(vault: Archive) -> Result:
        by, person = actor(args)
        return {"act": act, "out": args.out, "records": [
            str(r) for r in hand_out(vault, args.request, act, args.record or None,
                                     Path(args.out), by, person=person)]}

    return run(args, f"custody {act}", work,
        lambda r: f"{act}: {len(r['records'])} records into {r['out']} (registered)")


def cmd_export(args: argparse.Namespace) -> int:
    from host_agent.custody.export import export

    def work(archive: Archive) -> Result:
        by, person = actor(args)
        if isinstance(archive, Vault):  # the dock signs its vault's checkpoint
            identity = load_identity(args.identity, "custody export")
            return export(archive, args.request, Path(args.out), by=by, signer=identity,
                          unit_public=identity.unit_public, person=person)
        signer, unit = getattr(archive, "signer", None), getattr(archive, "unit_public", None)
        if signer is None:
            raise CustodyError("the records office at the centre has no key to sign its"
                               " packages (central.toml: office_key, office_cert; bodycam unit"
                               " certify --may records)")
        return export(archive, args.request, Path(args.out), by=by, signer=signer,
                      unit_public=unit, person=person)

    return run(args, "custody export", work,
        lambda r: f"package {r['package']}: {r['records']} records, {r['segments']} segments"
                  f" of {r['devices']} recorder(s) in {r['out']}\ncheck it anywhere with:"
                  f" bodycam verify {r['out']} --trust UNIT.pub")


def cmd_hall(args: argparse.Namespace) -> int:
    from host_agent.custody.hall import import_footage

    identity = load_identity(args.identity, "custody import-hall")
    return run(args, "custody import-hall", lambda v: import_footage(
        at_a_dock(v, "importing hall footage"), case=args.case, camera=args.camera,
        location=args.location, source=Path(args.file),
        start_us=args.start, end_us=args.end, provenance=args.provenance, by=args.by,
        signer=identity),
        lambda r: f"hall footage {r['object'][:16]}… ({r['size']} bytes) in case"
                  f" {args.case}, attested by the dock, not device-signed")


def cmd_retention(args: argparse.Namespace) -> int:
    from host_agent.custody import retention

    def show(r: dict[str, Any]) -> str:
        lines = [f"{'would remove' if args.dry_run else 'removed'} {e['record']}"
                 f" ({e['size']} bytes, stored {e['stored_at']})" for e in r["removed"]]
        lines += [f"kept {n}: {why}" for why, n in sorted(r["kept"].items())]
        lines.append(f"{len(r['removed'])} segment(s), {r['bytes_removed']} bytes"
                     f" {'would go' if args.dry_run else 'removed, each registered'}")
        return "\n".join(lines)

    return run(args, "custody retention", lambda v: retention.run(
        at_a_dock(v, "retention"), by=args.by, as_of_us=args.as_of, keep_days=args.keep_days,
        dry_run=args.dry_run).to_dict(), show)


def cmd_report(args: argparse.Namespace) -> int:
    from host_agent.custody import report

    scope = report.Scope(start_us=args.start, end_us=args.end, device=args.device,
                         officer=args.officer, case=args.case, as_of_us=args.as_of,
                         late_offload_h=args.late_offload_h,
                         not_docked_days=args.not_docked_days)
    if args.policy:
        try:
            from protocol import policy

            doc = policy.read_signed(Path(args.policy).read_bytes())
            scope.clock_bound_us = int(doc["thresholds"]["duty_clock_error_us"])
        except (OSError, ValueError, KeyError) as exc:
            return fail("custody report", exc)

    def work(vault: Archive) -> Result:
        r = report.build(vault, scope)
        if args.html:
            from host_agent.custody.report_html import render

            Path(args.html).write_text(render(r), encoding="utf-8")
        return r

    def show(r: dict[str, Any]) -> str:
        lines = [f"{f['t'] or '—':<27} {f['code']:<17} {f['device']:<14}"
                 f" {f['officer'] or '':<12} {f['case'] or '':<16} {f['detail']}"
                 for f in r["findings"]]
        lines.append(f"{len(r['findings'])} finding(s) in {len(r['phases'])} phase(s) of"
                     f" {len(r['devices'])} recorder(s)"
                     + (f"; HTML in {args.html}" if args.html else ""))
        return "\n".join(lines)

    return run(args, "custody report", work, show)


def cmd_verify(args: argparse.Namespace) -> int:
    from host_agent.custody import package

    try:
        key = public_key(args.trust)
    except KeyFileError as exc:
        return fail("verify", exc)
    try:
        result = package.check(Path(args.package), key)
    except Exception as exc:  # noqa: BLE001 - a hostile package: named, never a traceback
        print(f"{args.package}: unreadable: {type(exc).__name__}: {exc}")
        print(f"package {args.package}: not a package this tool can check; do not rely on it",
              file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=json_default, ensure_ascii=False))
        return 1 if result.problems else 0
    for p in result.problems:
        print(f"{p.path}: {p.code}: {p.detail}")
    s = result.summary
    if result.problems:
        print(f"package {args.package}: {len(result.problems)} problem(s); do not rely on it",
              file=sys.stderr)
        return 1
    req = s.get("request", {})
    print(f"package {s.get('package')}: {s.get('records')} signed records,"
          f" {s.get('segments')} segments of {', '.join(s.get('devices', []))}\n"
          f"exported {s.get('made_at')} by {s.get('made_by')} under request #{req.get('id')}"
          f" ({req.get('body')}, letter {req.get('letter')}, {req.get('requester')}),"
          f" approved by {s.get('approved_by')}\n"
          f"log {s.get('log', {}).get('origin')} checkpoint of {s.get('log', {}).get('size')}"
          f" entries signed by dock {s.get('dock')}, certified by the trusted unit: verified")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("custody", help="the records office: access register, export, report")
    csub = p.add_subparsers(dest="custody_command", required=True)

    def command(name: str, func: Callable[[argparse.Namespace], int], help_text: str,
                by: str = "who does it (registered with the act)") -> argparse.ArgumentParser:
        c = csub.add_parser(name, help=help_text)
        c.add_argument("vault", metavar="VAULT|central.toml",
                       help="a dock's vault, or the central index (its configuration)")
        unsigned = name in ("register", "report", "import-hall", "retention")
        c.add_argument("--by", required=name in ("import-hall", "retention"),
                       help=by + ("" if unsigned else
                                  "; a name only: once the register holds a certified"
                                  " person, acts need --as"))
        if not unsigned:
            add_as_option(c)
        c.add_argument("--json", action="store_true")
        c.set_defaults(func=func)
        return c

    c = command("person", cmd_person, "register a person: approver, custodian or officer")
    c.add_argument("--cert", help="the unit's certificate for the person (bodycam unit"
                                  " certify-person): name, ID, roles and clearance from it")
    c.add_argument("--name")
    c.add_argument("--id-no", help="their ID card or warrant number")
    c.add_argument("--role", action="append", choices=ROLES)
    c.add_argument("--clearance", choices=CLASSES)
    add_identity_option(c)
    c = command("request", cmd_request, "file an access request (Art. 10)")
    c.add_argument("--body", required=True, choices=BODIES)
    c.add_argument("--letter", required=True, help="the body's letter number")
    c.add_argument("--requester", required=True)
    c.add_argument("--requester-id", required=True, help="the requester's ID number")
    c.add_argument("--reason", required=True)
    _item_options(c)
    for name in ("approve", "deny"):
        c = command(name, cmd_decide, f"{name} a request", by="the approver")
        c.add_argument("request", type=int)
        c.add_argument("--note", default="")
    c = command("classify", cmd_classify, "classify a case or record (Art. 3)")
    c.add_argument("--case")
    c.add_argument("--record", type=_record)
    c.add_argument("--class", dest="cls", required=True, choices=CLASSES)
    c.add_argument("--reason", required=True)
    c = command("hold", cmd_hold, "put a case or record under a hold (kept for good)")
    c.add_argument("--case")
    c.add_argument("--record", type=_record)
    c.add_argument("--reason", required=True)
    c.add_argument("--lift", action="store_true", help="lift the hold instead")
    c = command("evidence", cmd_evidence, "mark a record as evidence in a case")
    c.add_argument("--record", type=_record, required=True)
    c.add_argument("--case", required=True)
    for name in ("view", "copy"):
        c = command(name, cmd_hand_out, f"{name} records under an approved request")
        c.add_argument("request", type=int)
        c.add_argument("--out", required=True, help="a new directory for the records")
        c.add_argument("--record", type=_record, action="append",
                       help="only these records (default: all the request covers)")
    c = command("export", cmd_export, "make a court package under an approved request")
    c.add_argument("request", type=int)
    c.add_argument("--out", required=True, help="a new directory for the package")
    add_identity_option(c)
    c = command("register", cmd_register, "the whole register, with log indices")
    c = command("import-hall", cmd_hall, "import fixed-camera footage into a case")
    c.add_argument("--case", required=True)
    c.add_argument("--camera", required=True)
    c.add_argument("--location", required=True)
    c.add_argument("--file", required=True)
    c.add_argument("--from", dest="start", type=_time, required=True)
    c.add_argument("--to", dest="end", type=_time, required=True)
    c.add_argument("--provenance", required=True, help="how, when and by whom it was taken")
    add_identity_option(c)
    c = command("retention", cmd_retention, "remove footage past retention (never a case's,"
                                            " a held or an unreleased record's)")
    c.add_argument("--as-of", type=_time, help="judge as at this time (default: now)")
    c.add_argument("--keep-days", type=int, default=183)
    c.add_argument("--dry-run", action="store_true")
    c = command("report", cmd_report, "the compliance report (Art. 11)")
    c.add_argument("--from", dest="start", type=_time)
    c.add_argument("--to", dest="end", type=_time)
    c.add_argument("--device")
    c.add_argument("--officer")
    c.add_argument("--case")
    c.add_argument("--as-of", type=_time)
    c.add_argument("--late-offload-h", type=int, default=24)
    c.add_argument("--not-docked-days", type=int, default=7)
    c.add_argument("--policy", help="the unit's signed policy (its clock bound)")
    c.add_argument("--html", metavar="FILE", help="also write the report as a page")

    v = sub.add_parser("verify", help="check an export package offline")
    v.add_argument("package")
    v.add_argument("--trust", required=True, metavar="UNIT.pub|HEX",
                   help="the unit's public key")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_verify)


def add_as_option(c: argparse.ArgumentParser) -> None:
    c.add_argument("--as", dest="as_dir", metavar="PERSON_DIR",
                   help="act as the certified person whose person.key and person.cert are"
                        " in PERSON_DIR: the act is signed (instead of --by)")


def _item_options(c: argparse.ArgumentParser) -> None:
    c.add_argument("--case", action="append", default=[], help="a case (repeatable)")
    c.add_argument("--device", help="a recorder, with --from and --to")
    c.add_argument("--from", dest="start", type=_time)
    c.add_argument("--to", dest="end", type=_time)
    c.add_argument("--record", type=_record, action="append", default=[],
                   help="DEVICE/SEQ (repeatable)")
