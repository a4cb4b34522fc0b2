"""`bodycam vault …`: check a vault and read what it holds."""

from __future__ import annotations

import argparse
import base64
import json
from datetime import UTC, datetime
from pathlib import Path

from host_agent.cli.output import ProgressBar, fail, format_phase, json_default
from host_agent.keys import KeyFileError, public_key
from host_agent.vault import Vault, VaultError


def _existing_vault(path: str, command: str) -> Vault | None:
    try:
        return Vault.open(path, create=False)
    except VaultError as exc:
        fail(command, exc)
        return None


def _unit_key(text: str | None) -> bytes | None:
    """--unit-key: 64 hex digits or a unit.pub file, as everywhere (keys.public_key)."""
    if text is None:
        return None
    try:
        return public_key(text)
    except KeyFileError as exc:
        raise VaultError(f"--unit-key {exc}") from None


def _dock_cert(path: str) -> bytes:
    """A dock certificate file: the COSE_Sign1 bytes, or their hex."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise VaultError(f"cannot read --dock-cert {path}: {exc.strerror}") from exc
    try:
        return bytes.fromhex(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return data


def cmd_vault_verify(args: argparse.Namespace) -> int:
    vault = _existing_vault(args.dir, "vault verify")
    if vault is None:
        return 2
    with vault:
        bar = ProgressBar("verify")
        try:
            report = vault.verify_report(
                progress=bar, checkpoints=args.checkpoint, witness=args.witness,
                unit_key=_unit_key(args.unit_key),
                dock_certs=[_dock_cert(p) for p in args.dock_cert])
        except VaultError as exc:
            return fail("vault verify", exc)
        records = vault.record_count()
    problems = report.problems
    if args.json:
        print(json.dumps({"vault": str(vault.root), "records": records, **report.to_dict()},
                         indent=2))
        return 1 if problems else 0
    for p in problems:
        print(f"{p.path}: {p.code}: {p.detail}")
    print(f"log {report.origin}: {report.log_size} entries, root"
          f" {base64.b64encode(report.log_root).decode()}")
    own_good = 0  # the vault's own good checkpoints are many: counted, not listed
    for c in report.checkpoints:
        if c.own and c.status == "consistent":
            own_good += 1
        else:
            print(f"checkpoint {c.source}: {c.status}: {c.detail}")
    if own_good:
        print(f"checkpoints the vault kept itself: {own_good} consistent with its log")
    for line in _cosignatures(args):
        print(line)
    print(f"trust: {report.trust}")
    if problems:
        print(f"vault {vault.root}: {len(problems)} problem(s) in {records} records")
    else:
        print(f"vault {vault.root}: {records} records verified, no problems")
    return 1 if problems else 0


def _cosignatures(args: argparse.Namespace) -> list[str]:
    """With --central-key: which of the --witness notes the central cosigned (it saw the log
    at that size), each checked with the central's key (host_agent/central/cosign.py)."""
    if not args.central_key:
        return []
    from host_agent.central import cosign

    name, _, key_text = args.central_key.rpartition("=")
    try:
        key = public_key(key_text)
    except KeyFileError as exc:
        return [f"--central-key: {exc}"]
    out, best = [], None
    for folder in args.witness:
        for path in sorted(Path(folder).glob("*")):
            try:
                note = path.read_bytes()
                when = cosign.verify(note, name, key)
            except (OSError, ValueError) as exc:
                out.append(f"{path}: not a cosigned checkpoint: {exc}")
                continue
            if when is not None:
                size = int(note.split(b"\n")[1])
                best = max(best or (0, 0), (size, when))
    if best is None:
        out.append(f"no checkpoint cosigned by {name} among the --witness notes")
    else:
        stamp = datetime.fromtimestamp(best[1], UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        out.append(f"cosigned by {name}: the central saw this log at {best[0]} entries"
                   f" ({stamp})")
    return out


def cmd_vault_timeline(args: argparse.Namespace) -> int:
    from host_agent.vault.timeline import device_timeline

    vault = _existing_vault(args.dir, "vault timeline")
    if vault is None:
        return 2
    with vault:
        devices = [args.device] if args.device else [str(d["device_id"]) for d in vault.devices()]
        out = {d: [p.to_dict() for p in device_timeline(vault, d)] for d in devices}
    if args.json:
        print(json.dumps(out, indent=2, default=json_default))
    else:
        for device_id, phases in out.items():
            print(f"Recorder {device_id}: {len(phases)} phases")
            for p in phases:
                print("\n".join(format_phase(p)))
    return 0


def cmd_vault_case(args: argparse.Namespace) -> int:
    from host_agent.cli.custody_commands import actor, open_archive
    from host_agent.custody import CustodyError
    from host_agent.custody.case import view
    from host_agent.keys import KeyFileError
    from host_agent.settings import SettingsError

    try:
        with open_archive(args.dir) as archive:
            by, person = actor(args)
            out = view(archive, args.case, by=by, person=person)
    except (CustodyError, VaultError, KeyFileError, SettingsError, OSError) as exc:
        return fail("vault case", exc)
    if args.json:
        print(json.dumps(out, indent=2, default=json_default, ensure_ascii=False))
        return 0
    print(f"Case {out['case']}: class {out['class']}{', HELD' if out['held'] else ''};"
          f" {out['records']} signed records, {len(out['hall'])} hall footage file(s)")
    for p in out["phases"]:
        print("\n".join(format_phase(p)))
    for s in out["segments"]:
        print(f"  segment {s['record']}: {s['size']} bytes, data {s['data']},"
              f" clock {s['clock']}, sha256 {s['sha256'][:16]}…")
    for h in out["hall"]:
        print(f"  hall footage #{h['id']} camera {h['camera']} at {h['location']},"
              f" {h['start']}..{h['end']}, {h['size']} bytes: NOT device-signed,"
              f" attested by the dock; {h['provenance']}")
    for e in out["register"]:
        print(f"  register #{e['id']} {e['at']} {e['what']} by {e['by']}"
              + (f": {e['act']}" if "act" in e else "") + (f" ({e['reason']})"
                                                          if "reason" in e else ""))
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("vault", help="vault maintenance")
    vsub = p.add_subparsers(dest="vault_command", required=True)
    v = vsub.add_parser("verify", help="re-verify every record, segment and the vault's log")
    v.add_argument("dir")
    v.add_argument("--json", action="store_true")
    v.add_argument("--checkpoint", action="append", default=[], metavar="FILE",
                   help="a checkpoint note kept outside the vault: the log must extend it"
                        " (repeatable)")
    v.add_argument("--witness", action="append", default=[], metavar="DIR",
                   help="a directory of kept checkpoint notes, e.g. another machine's copies"
                        " (repeatable)")
    v.add_argument("--unit-key", metavar="HEX|FILE",
                   help="the unit's public key (hex, or unit.pub): checkpoints count only if"
                        " signed by a dock key the unit certified")
    v.add_argument("--central-key", metavar="NAME=HEX|FILE",
                   help="the central's cosigning key: report the largest checkpoint among the"
                        " --witness notes the central cosigned (e.g. --witness VAULT/cosigned)")
    v.add_argument("--dock-cert", action="append", default=[], metavar="FILE",
                   help="a unit-signed dock certificate (with --unit-key), besides those the"
                        " vault recorded (repeatable)")
    v.set_defaults(func=cmd_vault_verify)
    v = vsub.add_parser("timeline", help="phases, their events and gaps, from the signed records")
    v.add_argument("dir")
    v.add_argument("--device", help="one recorder only")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_vault_timeline)
    v = vsub.add_parser("case", help="everything about a case: phases, segments, events, gaps,"
                                     " hall footage, accesses (registered)")
    v.add_argument("dir", metavar="VAULT|central.toml")
    v.add_argument("case")
    v.add_argument("--by", help="who looks (a registered person, cleared for the case's"
                                " class); once the register holds a certified person: --as")
    v.add_argument("--as", dest="as_dir", metavar="PERSON_DIR",
                   help="look as the certified person in PERSON_DIR (the look is signed)")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_vault_case)
