"""`bodycam device …`: the recorders themselves. Their custody (Art. 8: inventory, issue,
return, maintenance, history) from the vault's register; the firmware's commands register
their own subcommands here (`register_firmware`)."""

from __future__ import annotations

import argparse
from typing import Any

from host_agent.cli import firmware_commands
from host_agent.cli.custody_commands import Result, at_a_dock, run
from host_agent.custody.archive import Archive


def cmd_device(args: argparse.Namespace) -> int:
    from host_agent.custody.recorders import Recorders

    what = args.device_command

    def work(archive: Archive) -> Result:
        r = Recorders(archive)
        if what == "inventory":
            return r.inventory()
        if what == "history":
            return r.history(args.device)
        r = Recorders(at_a_dock(archive, f"device {what}"))
        if what == "add":
            r.inventory_add(args.device, by=args.by, model=args.model, serial=args.serial,
                            note=args.note)
        elif what == "issue":
            r.issue(args.device, args.officer, by=args.by)
        elif what == "return":
            r.give_back(args.device, by=args.by, condition=args.condition)
        else:
            r.maintain(args.device, by=args.by, kind=args.kind, note=args.note,
                       in_service=not args.out_of_service)
        return {"device": args.device, "event": what, "holder": r.holder(args.device),
                "in_service": r.in_service(args.device)}

    def show(result: Any) -> str:
        if what == "inventory":
            return "\n".join(
                f"{d['device_id']:<16}"
                f" {'held by ' + d['holder'] if d['holder'] else 'in store':<22}"
                f" {'in service' if d['in_service'] else 'OUT OF SERVICE':<15}"
                f" last docked {d['last_docking'] or 'never'}"
                f" ({'ready' if d['ready'] else 'not ready'})" for d in result) or "no recorders"
        if what == "history":
            return "\n".join(
                f"{e['at']} {e['event']:<12} by {e['by']}: "
                + ", ".join(f"{k}={v}" for k, v in e.items() if k not in ("at", "event", "by"))
                for e in result)
        return (f"{result['device']}: {what} registered; "
                + (f"held by {result['holder']}" if result["holder"] else "in store"))

    return run(args, f"device {what}", work, show)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    d = sub.add_parser("device", help="the recorders: custody (Art. 8) and firmware")
    dsub = d.add_subparsers(dest="device_command", required=True)
    for name, help_text in (("inventory", "every recorder, who holds it, last docking"),
                            ("history", "one recorder's history"),
                            ("add", "take a recorder into the inventory"),
                            ("issue", "issue a recorder to an officer (only if ready)"),
                            ("return", "take a recorder back"),
                            ("maintain", "record maintenance, repair or a fault")):
        c = dsub.add_parser(name, help=help_text)
        c.add_argument("vault")
        if name != "inventory":
            c.add_argument("device")
        if name not in ("inventory", "history"):
            c.add_argument("--by", required=True)
        c.add_argument("--json", action="store_true")
        c.set_defaults(func=cmd_device)
        if name == "add":
            c.add_argument("--model", default="")
            c.add_argument("--serial", default="")
            c.add_argument("--note", default="")
        elif name == "issue":
            c.add_argument("--officer", required=True)
        elif name == "return":
            c.add_argument("--condition", default="")
        elif name == "maintain":
            c.add_argument("--kind", required=True, choices=("maintenance", "repair", "fault"))
            c.add_argument("--note", required=True)
            c.add_argument("--out-of-service", action="store_true")
    firmware_commands.register(dsub)
