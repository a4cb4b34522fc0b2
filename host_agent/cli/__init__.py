"""`bodycam`: the dock agent's command line.

    bodycam demo [--json]                 simulated recorder in MicroPython, docked end to end
    bodycam sim                           only the recorder half: prints the port to dock on
    bodycam dock --port PORT --vault DIR  only the dock half
    bodycam enroll --port PORT --vault DIR
    bodycam vault verify DIR              re-verify everything; non-zero exit names what is wrong
    bodycam vault case DIR CASE --by NAME everything about a case (registered as an access)
    bodycam custody …                     the records office: people, requests, approvals,
                                          view/copy/export, retention, compliance report
                                          (on a VAULT, or at the centre on its central.toml)
    bodycam verify PACKAGE --trust UNIT   check an export package offline
    bodycam device …                      the recorders' custody: inventory, issue, return
    bodycam dockd --config dock.toml      the dock service: serves every recorder that arrives
    bodycam status [--config dock.toml]   its slots: recorder, state, progress, readiness
    bodycam forward --config dock.toml    the vault forwarded to the central tier, once
    bodycam central serve --config FILE   the central: PostgreSQL + S3 Object Lock, cosigning
    bodycam central status                each dock log at the centre: flags, refusals
    bodycam central clear|rebind ORIGIN   a person lets a flagged log go on, or binds a moved
                                          vault's log to its new dock's key

Each group of commands lives in a module of its own; only `demo` and `sim`
(lab_commands.py) load the lab rig, and only when they run.
"""

from __future__ import annotations

import argparse
import sys

from host_agent.cli import (
    central_commands,
    custody_commands,
    daemon_commands,
    device_commands,
    dock_commands,
    lab_commands,
    policy_commands,
    unit_commands,
    vault_commands,
)
from host_agent.cli.output import setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bodycam", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument("--log-json", action="store_true", help="logs as JSON lines on stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    lab_commands.register(sub)
    dock_commands.register(sub)
    vault_commands.register(sub)
    policy_commands.register(sub)
    unit_commands.register(sub)
    custody_commands.register(sub)
    device_commands.register(sub)
    daemon_commands.register(sub)
    central_commands.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.log_json)
    dock_commands.check_args(parser, args)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

