"""`bodycam dockd --config FILE` (the dock PC's service) and `bodycam status` (its slots)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from host_agent.cli.output import fail
from host_agent.dockd.config import ConfigError, load
from host_agent.logs import LOG_JSON_ENV

DEFAULT_STATE_DIR = "/run/bodycam"


def cmd_dockd(args: argparse.Namespace) -> int:
    from pathlib import Path

    from host_agent.dockd.service import Daemon
    from host_agent.keys import DockIdentity, KeyFileError

    try:
        cfg = load(args.config)
        DockIdentity.load(Path(cfg.identity))  # a clear error now, not in every worker
    except (ConfigError, KeyFileError) as exc:
        return fail("dockd", exc)
    if args.log_json:
        os.environ[LOG_JSON_ENV] = "1"  # the workers log as the daemon does
    try:
        return Daemon(cfg).run()
    except OSError as exc:  # an unusable state_dir, an unreadable MQTT CA file
        return fail("dockd", exc)


def cmd_status(args: argparse.Namespace) -> int:
    from host_agent.dockd import status

    state_dir = args.state_dir
    if args.config:
        try:
            state_dir = load(args.config).state_dir
        except ConfigError as exc:
            return fail("status", exc)
    while True:
        doc = status.read(state_dir or DEFAULT_STATE_DIR)
        if args.json:
            print(json.dumps(doc, indent=2))
            return 0 if doc["running"] else 1
        text = "\n".join(status.lines(doc))
        if not args.watch:
            print(text)
            return 0 if doc["running"] else 1
        sys.stdout.write("\x1b[H\x1b[J" + text + "\n")
        sys.stdout.flush()
        try:
            time.sleep(0.5)
        except KeyboardInterrupt:
            return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("dockd", help="the dock service: serve every recorder that arrives")
    p.add_argument("--config", required=True, metavar="FILE", help="dock.toml (see"
                   " host_agent/deploy/dockd/dock.toml)")
    p.set_defaults(func=cmd_dockd)
    p = sub.add_parser("status", help="the dock service's slots")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--config", metavar="FILE", help="the daemon's dock.toml")
    where.add_argument("--state-dir", metavar="DIR",
                       help=f"the daemon's state directory (default {DEFAULT_STATE_DIR})")
    p.add_argument("--json", action="store_true")
    p.add_argument("--watch", action="store_true", help="keep showing it (a person watching)")
    p.set_defaults(func=cmd_status)
