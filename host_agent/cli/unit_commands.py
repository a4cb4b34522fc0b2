"""`bodycam unit …` and `bodycam dock-identity …`: the unit's key, and the docks it vouches for.

The unit's key lives offline (the records office); each dock makes its own key on its PC. The
unit certifies a dock's public key (`unit certify`), the certificate goes back to the dock
(`dock-identity install`), and recorders commissioned with the unit's public key then accept
that dock. Revoking a dock: list its key id in the policy's `revoked_docks` and deliver it.

People of the records office likewise: each makes their key (`person new`), the unit
certifies it with their name, ID number, roles and clearance (`unit certify-person`), and the
records office registers the certificate (`custody person --cert`); their acts are then
signed (`--as PERSON_DIR`, host_agent/custody/register.py).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from host_agent.cli.options import int_in
from host_agent.cli.output import fail
from host_agent.keys import DockIdentity, KeyFileError, PersonKey, UnitKey, public_key
from protocol import authority

DOCK_DIR_ENV = "BODYCAM_DOCK_DIR"
DEFAULT_DOCK_DIR = "/etc/bodycam/dock"


def add_identity_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--identity", metavar="DOCK_DIR",
                   default=os.environ.get(DOCK_DIR_ENV, DEFAULT_DOCK_DIR),
                   help=f"the dock's key and unit certificate (default: ${DOCK_DIR_ENV} or "
                        f"{DEFAULT_DOCK_DIR}; made with `bodycam dock-identity`)")


def load_identity(path: str, command: str) -> DockIdentity:
    """The dock identity at `path`; SystemExit(2) with the reason when it cannot be used."""
    try:
        return DockIdentity.load(Path(path))
    except KeyFileError as exc:
        raise SystemExit(fail(command, exc)) from None


def _rights(text: str) -> tuple[str, ...]:
    rights = tuple(r.strip() for r in text.split(",") if r.strip())
    bad = [r for r in rights if r not in authority.RIGHTS]
    if bad or not rights:
        raise argparse.ArgumentTypeError(
            f"rights are a comma-separated subset of {','.join(authority.RIGHTS)}")
    return rights


def cmd_unit_keygen(args: argparse.Namespace) -> int:
    try:
        unit = UnitKey.create(Path(args.out))
    except KeyFileError as exc:
        return fail("unit keygen", exc)
    print(f"unit key in {Path(args.out) / 'unit.key'} (keep it offline); public key "
          f"{unit.public.hex()}\ncommission recorders with {Path(args.out) / 'unit.pub'}")
    return 0


def cmd_unit_certify(args: argparse.Namespace) -> int:
    """Certify a dock's key. With --dock-dir (a lab, where unit and dock share a machine) the
    dock's key is made there if missing and the certificate installed beside it."""
    try:
        unit = UnitKey.load(Path(args.unit))
        if args.dock_dir:
            dock_dir = Path(args.dock_dir)
            dock_pub = (public_key(dock_dir / "dock.pub") if (dock_dir / "dock.key").exists()
                        else DockIdentity.create_key(dock_dir))
        elif args.dock_key:
            dock_pub = public_key(args.dock_key)
        else:
            raise KeyFileError("give --dock-key (the dock's dock.pub) or --dock-dir")
        cert = unit.certify_dock(args.dock_id, dock_pub, days=args.days, may=args.may)
        if args.dock_dir:
            ident = DockIdentity.install_cert(Path(args.dock_dir), cert, unit.public)
            where = f"installed in {args.dock_dir}"
        else:
            out = Path(args.out or f"{args.dock_id}.cert")
            out.write_bytes(cert)
            where = f"written to {out}; install it with `bodycam dock-identity install`"
            ident = None
    except (KeyFileError, OSError) as exc:
        return fail("unit certify", exc)
    kid = authority.key_id(dock_pub).hex()
    print(f"certified dock {args.dock_id} (key id {kid}) for {args.days} days to "
          f"{', '.join(args.may)}; {where}")
    if ident is not None:
        print(f"dock identity {ident.dock_id} ready in {args.dock_dir}")
    return 0


def cmd_certify_person(args: argparse.Namespace) -> int:
    """Certify a person's key with their name, ID number, roles and clearance."""
    try:
        unit = UnitKey.load(Path(args.unit))
        key = Path(args.key)
        person_pub = public_key(key)
        cert = unit.certify_person(args.name, args.id_no, args.role, args.clearance,
                                   person_pub, days=args.days)
        out = Path(args.out) if args.out else (
            key.parent / "person.cert" if key.is_file() else Path(f"{args.name}.cert"))
        out.write_bytes(cert)
    except (KeyFileError, OSError) as exc:
        return fail("unit certify-person", exc)
    print(f"certified {args.name} ({', '.join(sorted(set(args.role)))}; cleared for"
          f" {args.clearance}; key id {authority.key_id(person_pub).hex()}) for {args.days}"
          f" days: {out}")
    return 0


def cmd_person_new(args: argparse.Namespace) -> int:
    try:
        public = PersonKey.create(Path(args.dir))
    except KeyFileError as exc:
        return fail("person new", exc)
    print(f"person key in {Path(args.dir) / 'person.key'}; public key {public.hex()}\n"
          f"take {Path(args.dir) / 'person.pub'} to the unit: bodycam unit certify-person"
          " --key ...")
    return 0


def cmd_identity_new(args: argparse.Namespace) -> int:
    try:
        public = DockIdentity.create_key(Path(args.dir))
    except KeyFileError as exc:
        return fail("dock-identity new", exc)
    print(f"dock key in {Path(args.dir) / 'dock.key'}; public key {public.hex()}\n"
          f"take {Path(args.dir) / 'dock.pub'} to the unit: bodycam unit certify --dock-key ...")
    return 0


def cmd_identity_install(args: argparse.Namespace) -> int:
    try:
        cert = Path(args.cert).read_bytes()
        ident = DockIdentity.install_cert(Path(args.dir), cert, public_key(args.unit_key))
    except (OSError, KeyFileError) as exc:
        return fail("dock-identity install", exc)
    print(f"dock {ident.dock_id} may {', '.join(ident.cert_doc['may'])}; identity in {args.dir}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("unit", help="the unit's key: sign policies, certify docks (offline)")
    usub = p.add_subparsers(dest="unit_command", required=True)
    k = usub.add_parser("keygen", help="make the unit's key (unit.key, unit.pub)")
    k.add_argument("--out", required=True, help="directory for unit.key and unit.pub")
    k.set_defaults(func=cmd_unit_keygen)
    c = usub.add_parser("certify", help="certify a dock's key")
    c.add_argument("--unit", required=True, help="the unit's directory (or its unit.key)")
    c.add_argument("--dock-id", required=True, help="the dock's name, e.g. station-03")
    c.add_argument("--dock-key", help="the dock's public key: dock.pub or 64 hex digits")
    c.add_argument("--dock-dir", help="lab: make/use the dock key here and install the cert")
    c.add_argument("--out", help="where the certificate goes (default DOCK_ID.cert)")
    c.add_argument("--days", type=int_in(1, 3650), default=365, help="validity (default 365)")
    c.add_argument("--may", type=_rights, default=authority.DOCK_RIGHTS,
                   help=f"rights (default {','.join(authority.DOCK_RIGHTS)}; the records"
                        " office at the centre: records, alone)")
    c.set_defaults(func=cmd_unit_certify)
    c = usub.add_parser("certify-person", help="certify a person of the records office")
    c.add_argument("--unit", required=True, help="the unit's directory (or its unit.key)")
    c.add_argument("--name", required=True)
    c.add_argument("--id-no", required=True, help="their ID card or warrant number")
    c.add_argument("--role", action="append", required=True, choices=authority.PERSON_ROLES)
    c.add_argument("--clearance", default="none", choices=authority.CLASSES)
    c.add_argument("--key", required=True, help="the person's public key: person.pub or hex")
    c.add_argument("--days", type=int_in(1, 3650), default=365, help="validity (default 365)")
    c.add_argument("--out", help="where the certificate goes (default: person.cert beside"
                                 " person.pub)")
    c.set_defaults(func=cmd_certify_person)

    p = sub.add_parser("person", help="a person's key (the records office)")
    psub = p.add_subparsers(dest="person_command", required=True)
    n = psub.add_parser("new", help="make a person's key (person.key, person.pub)")
    n.add_argument("--dir", required=True)
    n.set_defaults(func=cmd_person_new)

    p = sub.add_parser("dock-identity", help="this dock's key and the unit's certificate")
    dsub = p.add_subparsers(dest="identity_command", required=True)
    n = dsub.add_parser("new", help="make this dock's key (dock.key, dock.pub)")
    n.add_argument("--dir", required=True)
    n.set_defaults(func=cmd_identity_new)
    i = dsub.add_parser("install", help="install the unit's certificate for this dock")
    i.add_argument("--dir", required=True)
    i.add_argument("--cert", required=True, help="the certificate from `bodycam unit certify`")
    i.add_argument("--unit-key", required=True, help="the unit's public key: unit.pub or hex")
    i.set_defaults(func=cmd_identity_install)
