"""`bodycam device deploy` and `bodycam device commission`: the recorder firmware onto a board.

    bodycam device deploy --port PORT [--build-dir DIR] [--dry-run] [--json]
    bodycam device commission --port PORT --unit-key UNIT/unit.pub [--storage DIR] [--json]

Both speak to the board's MicroPython REPL through mpremote (host_agent/firmware/); a port
with no REPL is one line on stderr naming it, exit 2.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from host_agent.firmware.commission import DEFAULT_STORAGE


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


def _installed(before: object) -> str:
    from host_agent.firmware.deploy import Installed

    if not isinstance(before, Installed):
        return "no firmware version file"
    return (f"firmware {before.version} (build {before.build})"
            + ("" if before.intact else ", its files not as installed"))


def cmd_deploy(args: argparse.Namespace) -> int:
    from host_agent.cli.output import fail
    from host_agent.firmware.board import BoardError
    from host_agent.firmware.build import FirmwareError
    from host_agent.firmware.deploy import deploy

    try:
        result = deploy(args.port, Path(args.build_dir) if args.build_dir else None,
                        dry_run=args.dry_run)
    except (BoardError, FirmwareError, OSError) as exc:
        return fail("deploy", exc)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(f"{args.port}: the board had {_installed(result.before)}")
    done = "would copy" if args.dry_run else "copied"
    gone = "would remove" if args.dry_run else "removed"
    if not result.copied and not result.removed:
        print(f"{args.port}: firmware {result.version} (build {result.build}) installed:"
              f" all {result.unchanged} files were up to date")
        return 0
    print(f"{args.port}: firmware {result.version} (build {result.build})"
          f"{' not' if args.dry_run else ''} installed: {done} {_files(len(result.copied))}"
          f" ({result.bytes} bytes), {gone} {len(result.removed)}, {result.unchanged} unchanged")
    for path in result.copied:
        print(f"  {done} {path}")
    for path in result.removed:
        print(f"  {gone} {path}")
    return 0


def cmd_commission(args: argparse.Namespace) -> int:
    from host_agent.cli.output import fail
    from host_agent.firmware.board import BoardError
    from host_agent.firmware.commission import commission
    from host_agent.keys import KeyFileError, public_key

    try:
        unit = public_key(args.unit_key)
        done = commission(args.port, unit, args.storage)
    except (BoardError, KeyFileError, ValueError, OSError) as exc:
        return fail("commission", exc)
    if args.json:
        print(json.dumps(done.to_dict(), indent=2))
        return 0
    made = ("made on the recorder now" if done.new_key else
            "already on the recorder, kept")
    print(f"{args.port}: device key {done.fingerprint} ({made}; its private key stays there)")
    print(f"{args.port}: commissioned to unit key {done.unit} ({done.storage}/unit.pub)")
    print("next, at the dock, with the recorder running its firmware on PORT:")
    print(f"  {done.enroll_command()}")
    return 0


def register(dsub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the firmware's subcommands to `bodycam device`."""
    d = dsub.add_parser("deploy", help="build the firmware and install it on a board (mpremote)")
    d.add_argument("--port", required=True, help="the board's REPL serial port")
    d.add_argument("--build-dir", metavar="DIR",
                   help="build into DIR (default: a cached build of the current sources)")
    d.add_argument("--dry-run", action="store_true",
                   help="say what the board holds and what would be copied; change nothing")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_deploy)

    c = dsub.add_parser("commission",
                        help="make the device key on the board, give it the unit key")
    c.add_argument("--port", required=True, help="the board's REPL serial port")
    c.add_argument("--unit-key", required=True, metavar="UNIT.pub",
                   help="the unit's public key: unit.pub, or 64 hex digits")
    c.add_argument("--storage", default=DEFAULT_STORAGE,
                   help="the recorder's storage on the board, as its firmware opens it"
                        f" (default: {DEFAULT_STORAGE})")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_commission)
