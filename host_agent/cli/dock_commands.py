"""`bodycam dock`, `dock-many` and `enroll`: what a dock PC runs."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from host_agent.cli.options import host_port
from host_agent.cli.output import ProgressBar, emit, fail, json_default
from host_agent.cli.unit_commands import add_identity_option, load_identity
from host_agent.dock import DockSession, SessionError, dock
from host_agent.keys import DockIdentity
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
        print(f"{command}: --policy {path}: {exc.strerror}", file=sys.stderr)
        raise SystemExit(2) from None
    except policy.PolicyError as exc:
        print(f"{command}: --policy {path}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
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
    identity = load_identity(args.identity, "dock")
    try:
        with _vault(args.vault, "dock", create=args.enroll_unknown) as vault:
            try:
                transport = _open_port(args)
            except TransportError as exc:
                raise CommandError(f"dock: {exc}") from None
            try:
                session = DockSession(transport, vault, identity,
                                      enroll_unknown=args.enroll_unknown)
                report = dock(session, ProgressBar("offload"), policy_file=signed)
                if args.witness:
                    _hand_to_witness(Path(args.witness), report.checkpoint)
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
    load_identity(args.identity, "dock-many")  # a clear error here, not in every worker
    try:
        results = dock_many(args.port, args.vault, processes=args.processes,
                            identity_dir=args.identity, enroll_unknown=args.enroll_unknown,
                            policy=signed, baudrate=args.baud)
    except (VaultError, ValueError) as exc:
        return fail("dock-many", exc)
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
    """The enrolment ceremony: trust a recorder's key in the vault. Over the port the recorder
    must show the key the operator read off it (--expect-fingerprint) and prove it holds it
    in the handshake; --trust-on-first-use skips the first check, and only says so loudly."""
    if not (args.public_key or args.expect_fingerprint or args.trust_on_first_use):
        print("enroll: give --expect-fingerprint HEX (read it off the recorder), or say"
              " --trust-on-first-use explicitly", file=sys.stderr)
        return 2
    identity = load_identity(args.identity, "enroll")
    try:
        with _vault(args.vault, "enroll", create=True) as vault:
            if args.public_key:
                device_id, public, new = _enroll_offline(args, vault, identity.dock_id)
            else:
                device_id, public, new = _enroll_over_port(args, vault, identity)
    except CommandError as exc:
        print(exc, file=sys.stderr)
        return 2
    fingerprint = key_id(public).hex()
    if args.trust_on_first_use and not args.expect_fingerprint:
        print(f"enroll: WARNING: {device_id}'s key {fingerprint} was trusted on first use,"
              " without checking its fingerprint", file=sys.stderr)
    print(json.dumps({"device_id": device_id, "key_fingerprint": fingerprint, "new": new})
          if args.json else
          f"{'enrolled' if new else 'already enrolled'}: {device_id} key {fingerprint}")
    return 0


def _enroll_offline(args: argparse.Namespace, vault: Vault,
                    by: str) -> tuple[str, bytes, bool]:
    """--device-id with --public-key, from a trusted record of the commissioning."""
    try:
        public = bytes.fromhex(args.public_key)
    except ValueError:
        raise CommandError("enroll: --public-key must be hex") from None
    expected = (args.expect_fingerprint or "").lower()
    if expected and expected != key_id(public).hex():
        raise CommandError(f"enroll: that key's fingerprint is {key_id(public).hex()}, not"
                           f" the expected {expected}: not enrolled")
    try:
        new = vault.enroll(args.device_id, public, by=by, note=args.note)
    except VaultError as exc:
        raise CommandError(f"enroll: {exc}") from None
    return args.device_id, public, new


def _enroll_over_port(args: argparse.Namespace, vault: Vault,
                      identity: DockIdentity) -> tuple[str, bytes, bool]:
    try:
        transport = _open_port(args)
    except TransportError as exc:
        raise CommandError(f"enroll: {exc}") from None
    try:
        session = DockSession(transport, vault, identity, enroll_unknown=args.trust_on_first_use,
                              expect_fingerprint=args.expect_fingerprint)
        ident = session.identify()
    except (SessionError, TransportError, VaultError) as exc:
        raise CommandError(f"enroll: {exc}") from None
    finally:
        transport.close()
    return ident.device_id, ident.public_key, ident.newly_enrolled


def _hand_to_witness(witness: Path, checkpoint: str) -> None:
    """Put the vault's latest signed checkpoint where a witness keeps it (another disk or
    machine): a later rollback of the vault is then seen against it."""
    try:
        witness.mkdir(parents=True, exist_ok=True)
        size = checkpoint.splitlines()[1]
        (witness / f"checkpoint-{int(size):012d}.txt").write_text(checkpoint)
    except (OSError, IndexError, ValueError) as exc:
        raise CommandError(f"dock: cannot hand the checkpoint to {witness}: {exc}") from None


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
        add_identity_option(p)
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=func)
        if name == "dock":
            p.add_argument("--enroll-unknown", action="store_true",
                           help="trust a new recorder on first sight (lab use only)")
            p.add_argument("--policy", metavar="POLICY.cose",
                           help="deliver this unit-signed policy (bodycam policy sign)")
            p.add_argument("--witness", metavar="DIR",
                           help="also write the vault's signed checkpoint here (another disk)")
        else:
            p.add_argument("--device-id", help="offline enrolment: the device id …")
            p.add_argument("--public-key", help="… and its public key (hex)")
            p.add_argument("--expect-fingerprint", metavar="HEX",
                           help="the key fingerprint shown on the recorder; refuse any other")
            p.add_argument("--trust-on-first-use", action="store_true",
                           help="enrol whatever key the recorder shows (lab use only)")
            p.add_argument("--note", default="")

    p = sub.add_parser("dock-many", help="dock several serial ports at once (a many-slot dock)")
    p.add_argument("--port", action="append", required=True, help="serial port; repeat it")
    p.add_argument("--vault", required=True)
    p.add_argument("--baud", type=int, default=921600)
    add_identity_option(p)
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
