"""`bodycam vault …`: check a vault and read what it holds."""

from __future__ import annotations

import argparse
import json
import sys

from host_agent.cli.output import ProgressBar, format_phase, json_default
from host_agent.vault import Vault, VaultError


def _existing_vault(path: str, command: str) -> Vault | None:
    try:
        return Vault.open(path, create=False)
    except VaultError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return None


def cmd_vault_verify(args: argparse.Namespace) -> int:
    vault = _existing_vault(args.dir, "vault verify")
    if vault is None:
        return 2
    with vault:
        bar = ProgressBar("verify")
        problems = vault.verify(progress=bar)
        records = vault.record_count()
    if args.json:
        print(json.dumps({"vault": str(vault.root), "records": records, "ok": not problems,
                          "problems": [p.__dict__ for p in problems]}, indent=2))
    elif problems:
        for p in problems:
            print(f"{p.path}: {p.code}: {p.detail}")
        print(f"vault {vault.root}: {len(problems)} problem(s) in {records} records")
    else:
        print(f"vault {vault.root}: {records} records verified, no problems")
    return 1 if problems else 0


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


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("vault", help="vault maintenance")
    vsub = p.add_subparsers(dest="vault_command", required=True)
    v = vsub.add_parser("verify", help="re-verify every record and segment")
    v.add_argument("dir")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_vault_verify)
    v = vsub.add_parser("timeline", help="phases, their events and gaps, from the signed records")
    v.add_argument("dir")
    v.add_argument("--device", help="one recorder only")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_vault_timeline)
