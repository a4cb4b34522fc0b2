"""`bodycam dock`, `dock-many` and `enroll`: what a dock PC runs."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from host_agent.cli.options import host_port
from host_agent.cli.output import ProgressBar, emit, json_default
from host_agent.dock import DockSession, SessionError, dock
from host_agent.transport import Transport, TransportError
from host_agent.transport.serial import SerialTransport
from host_agent.vault import Vault, VaultError, key_id
from host_agent.vault.schema import DB_NAME
from protocol import policy


def mqtt_transport(broker: str, device_id: str,
                   args: argparse.Namespace | None = None) -> Transport:
    from host_agent.transport.mqtt import MqttTransport, read_password

    host, _, port = broker.rpartition(":")
    ca, cert, key, user, pw_file = (getattr(args, name, None) for name in (
        "mqtt_ca", "mqtt_cert", "mqtt_key", "mqtt_user", "mqtt_password_file"))
    return MqttTransport(host or "127.0.0.1", int(port), device_id, ca=ca, cert=cert, key=key,
                         username=user, password=read_password(pw_file) if pw_file else None)


def add_mqtt_auth_options(p: argparse.ArgumentParser, recorder: bool) -> None:
    """TLS and credentials for a production broker (host_agent/deploy/mosquitto/README.md)."""
    who = "the recorder's, CN = its device id" if recorder else "the dock's, CN = dock"
    p.add_argument("--mqtt-ca", metavar="FILE", help="TLS: verify the broker against this CA")
    p.add_argument("--mqtt-cert", metavar="FILE", help=f"TLS client certificate ({who})")
    p.add_argument("--mqtt-key", metavar="FILE", help="the client certificate's private key")
    p.add_argument("--mqtt-user", metavar="NAME", help="MQTT user name (password auth)")
    p.add_argument("--mqtt-password-file", metavar="FILE", help="file holding the MQTT password")
    if recorder:
        p.add_argument("--mqtt-server-name", metavar="NAME",
                       help="name in the broker's certificate, if not the host of --mqtt")


def _open_port(args: argparse.Namespace) -> Transport:
    transport: Transport
    try:
        if args.mqtt:
            transport = mqtt_transport(args.mqtt, args.device, args)
        else:
            transport = SerialTransport(args.port, baudrate=args.baud)
    except (OSError, ValueError) as exc:  # unreadable TLS files, a device id with "/" …
        raise TransportError(str(exc)) from exc
    transport.open()
    return transport


def _read_policy(path: str | None, command: str) -> bytes | None:
    """The unit's signed policy file, checked to be one (its signature is the recorder's
    to check); None without --policy. Raises SystemExit(2) with a message otherwise."""
    if not path:
        return None
    try:
        signed = Path(path).read_bytes()
        policy.read_signed(signed)
    except OSError as exc:
        raise SystemExit(f"{command}: --policy {path}: {exc.strerror}") from None
    except policy.PolicyError as exc:
        raise SystemExit(f"{command}: --policy {path}: {exc}") from None
    return signed


@contextlib.contextmanager
def _vault(path: str, command: str, create: bool) -> Iterator[Vault]:
    """Open the vault at `path`, creating it only if `create`; a vault this call created is
    removed again when the command fails before anything was enrolled in it."""
    root = Path(path).absolute()
    fresh = not (root / DB_NAME).exists()
    if fresh and not create:
        raise CommandError(f"{command}: {root} is not a vault; `bodycam enroll` creates one "
                           "with the first recorder it trusts")
    try:
        vault = Vault.open(root)
    except VaultError as exc:
        raise CommandError(f"{command}: {exc}") from None
    kept = False
    try:
        yield vault
        kept = True
    finally:
        kept = kept or bool(vault.devices())
        vault.close()
        if fresh and not kept:
            Vault.remove_empty(root)


class CommandError(Exception):
    """A command cannot go on; the message is for the person who typed it (exit status 2)."""


def cmd_dock(args: argparse.Namespace) -> int:
    signed = _read_policy(args.policy, "dock")
    try:
        with _vault(args.vault, "dock", create=args.enroll_unknown) as vault:
            try:
                transport = _open_port(args)
            except TransportError as exc:
                raise CommandError(f"dock: {exc}") from None
            try:
                session = DockSession(transport, vault, dock_id=args.dock_id,
                                      enroll_unknown=args.enroll_unknown)
                report = dock(session, ProgressBar("offload"), policy_file=signed)
            except (SessionError, TransportError, VaultError, OSError) as exc:
                # Nothing was released that the vault does not hold; the next docking resumes.
                raise CommandError(f"dock: {exc}") from None
            finally:
                transport.close()
    except CommandError as exc:
        print(exc, file=sys.stderr)
        return 2
    emit(args, report)
    if "rejected" in report.policy:
        print(f"dock: the recorder rejected the policy: {report.policy['rejected']}",
              file=sys.stderr)
        return 1
    return 0 if report.readiness["ready"] and not report.offload["quarantined"] else 1


def cmd_dock_many(args: argparse.Namespace) -> int:
    """Dock every --port at once (a many-slot dock): one worker process per port."""
    from host_agent.dock.many import dock_many

    signed = _read_policy(args.policy, "dock-many")
    try:
        results = dock_many(args.port, args.vault, processes=args.processes,
                            dock_id=args.dock_id, enroll_unknown=args.enroll_unknown,
                            policy=signed, baudrate=args.baud)
    except (VaultError, ValueError) as exc:
        print(f"dock-many: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2, default=json_default))
    else:
        for r in results:
            if r.report is None:
                print(f"{r.port}: FAILED: {r.error}")
            else:
                off = r.report["offload"]
                print(f"{r.port}: {r.report['device_id']}: stored {len(off['stored'])} records, "
                      f"{off['bytes']} bytes, ready={r.report['readiness']['ready']}")
    failed = any(r.report is None for r in results)
    unready = any(r.report and (not r.report["readiness"]["ready"]
                                or r.report["offload"]["quarantined"]) for r in results)
    return 2 if failed else 1 if unready else 0


def cmd_enroll(args: argparse.Namespace) -> int:
    try:
        with _vault(args.vault, "enroll", create=True) as vault:
            device_id, public = _enrollee(args, vault)
            fingerprint = key_id(public).hex()
            if args.expect_fingerprint and args.expect_fingerprint.lower() != fingerprint:
                raise CommandError(f"enroll: device {device_id} shows key {fingerprint}, not the"
                                   f" expected {args.expect_fingerprint}: not enrolled")
            try:
                new = vault.enroll(device_id, public, by=args.dock_id, note=args.note)
            except VaultError as exc:
                raise CommandError(f"enroll: {exc}") from None
    except CommandError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(json.dumps({"device_id": device_id, "key_fingerprint": fingerprint, "new": new})
          if args.json else
          f"{'enrolled' if new else 'already enrolled'}: {device_id} key {fingerprint}")
    return 0


def _enrollee(args: argparse.Namespace, vault: Vault) -> tuple[str, bytes]:
    """(device id, public key) given offline, or as the recorder on the port shows them."""
    if args.public_key:
        try:
            return args.device_id, bytes.fromhex(args.public_key)
        except ValueError:
            raise CommandError("enroll: --public-key must be hex") from None
    try:
        transport = _open_port(args)
    except TransportError as exc:
        raise CommandError(f"enroll: {exc}") from None
    try:
        session = DockSession(transport, vault, dock_id=args.dock_id)
        reply = session.request("hello", proto=1, dock=args.dock_id)
    except (SessionError, TransportError) as exc:
        raise CommandError(f"enroll: {exc}") from None
    finally:
        transport.close()
    return reply["device_id"], reply["public_key"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    for name, func in (("dock", cmd_dock), ("enroll", cmd_enroll)):
        p = sub.add_parser(name, help="dock one recorder" if name == "dock" else
                           "trust a recorder's key in the vault")
        p.add_argument("--port", help="serial port (pyserial URL)")
        p.add_argument("--mqtt", metavar="HOST:PORT", type=host_port,
                       help="dock over this MQTT broker instead")
        p.add_argument("--device", help="with --mqtt: the recorder's device id")
        add_mqtt_auth_options(p, recorder=False)
        p.add_argument("--vault", required=True)
        p.add_argument("--baud", type=int, default=921600)
        p.add_argument("--dock-id", default="dock")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=func)
        if name == "dock":
            p.add_argument("--enroll-unknown", action="store_true",
                           help="trust a new recorder on first sight (lab use only)")
            p.add_argument("--policy", metavar="POLICY.cose",
                           help="deliver this unit-signed policy (bodycam policy sign)")
        else:
            p.add_argument("--device-id", help="offline enrolment: the device id …")
            p.add_argument("--public-key", help="… and its public key (hex)")
            p.add_argument("--expect-fingerprint", help="refuse unless the key matches")
            p.add_argument("--note", default="")

    p = sub.add_parser("dock-many", help="dock several serial ports at once (a many-slot dock)")
    p.add_argument("--port", action="append", required=True, help="serial port; repeat it")
    p.add_argument("--vault", required=True)
    p.add_argument("--baud", type=int, default=921600)
    p.add_argument("--dock-id", default="dock")
    p.add_argument("--processes", type=int, default=None,
                   help="worker processes (default: one per port)")
    p.add_argument("--enroll-unknown", action="store_true",
                   help="trust a new recorder on first sight (lab use only)")
    p.add_argument("--policy", metavar="POLICY.cose",
                   help="deliver this unit-signed policy (bodycam policy sign)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_dock_many)


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Combinations argparse cannot express."""
    if args.command in ("dock", "enroll") and args.mqtt and not args.device:
        parser.error(f"{args.command} --mqtt needs --device ID")
    if args.command == "dock" and not (args.port or args.mqtt):
        parser.error("dock needs --port or --mqtt")
    if args.command == "enroll" and not (args.port or args.mqtt) and not (
            args.device_id and args.public_key):
        parser.error("enroll needs --port or --mqtt, or --device-id with --public-key")
