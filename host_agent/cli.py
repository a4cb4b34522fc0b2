"""`bodycam`: the dock agent's command line.

    bodycam demo [--json]                 simulated recorder in MicroPython, docked end to end
    bodycam sim                           only the recorder half: prints the port to dock on
    bodycam dock --port PORT --vault DIR  only the dock half
    bodycam enroll --port PORT --vault DIR
    bodycam vault verify DIR              re-verify everything; non-zero exit names what is wrong
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from host_agent.evidence import key_id
from host_agent.serial_transport import SerialTransport
from host_agent.session import DockReport, DockSession, SessionError, dock
from host_agent.simulator import SimConfig, SimulatedRecorder
from host_agent.transport import Transport, TransportError
from host_agent.vault import Vault, VaultError

log = logging.getLogger("bodycam")


class JsonLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        })


def _setup_logging(verbose: int, json_logs: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter() if json_logs else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)


class ProgressBar:
    """A one-line bar on stderr, only when stderr is a terminal."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.enabled = sys.stderr.isatty()
        self.t0 = time.monotonic()
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self._last < 0.1 and done < total):
            return
        self._last = now
        frac = done / total if total else 1.0
        rate = done / max(1e-9, now - self.t0) / 1e6
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\r{self.label} [{bar:<30}] {frac:5.1%} {rate:7.1f} MB/s")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _fmt_us(us: int) -> str:
    if abs(us) >= 1_000_000:
        return f"{us / 1e6:+.3f} s"
    if abs(us) >= 1_000:
        return f"{us / 1e3:+.3f} ms"
    return f"{us:+d} µs"


def format_report(r: DockReport) -> str:
    st = r.readiness["status"]
    main, backup, storage = st["battery_main"], st["battery_backup"], st["storage"]
    off = r.offload
    lines = [
        f"Recorder      {r.device_id}  firmware {r.firmware}",
        f"Device key    {r.key_fingerprint}" + ("  (enrolled now)" if r.newly_enrolled else ""),
        f"Clock         offset before sync {_fmt_us(r.clock['offset_before_us'])}"
        f" (±{r.clock['bound_before_us']} µs)",
        f"              offset after sync  {_fmt_us(r.clock['offset_after_us'])}"
        f" (±{r.clock['bound_after_us']} µs)",
        f"Main battery  {main['mv']} mV  {main['pct']}%"
        + ("  charging" if main["charging"] else ""),
        f"Backup cell   {backup['mv']} mV  {backup['pct']}%",
        f"Storage       {storage['free'] / 2**30:.1f} GiB free"
        f" of {storage['total'] / 2**30:.1f} GiB",
        f"Offload       {len(off['stored'])} records ({off['segments']} segments) verified and"
        f" stored, {len(off['released'])} released on the device,"
        f" {len(off['quarantined'])} quarantined",
        f"              {off['bytes'] / 1e6:.1f} MB in {off['seconds']:.2f} s = "
        f"{off['mb_per_s']:.1f} MB/s",
    ]
    for q in off["quarantined"]:
        lines.append(f"  QUARANTINED record {q['seq']}: {q['code']}: {q['detail']}")
    if r.policy:
        lines.append("Policy        " + ", ".join(f"{k} {v}" for k, v in r.policy.items()))
    for p in r.phases:
        lines += format_phase(p)
    verdict = "READY for duty" if r.readiness["ready"] else "NOT READY: " + "; ".join(
        r.readiness["reasons"])
    lines += [f"Readiness     {verdict}", f"Vault         {r.vault}"]
    return "\n".join(lines)


def _clock_time(us: int | None) -> str:
    if us is None:
        return "—"
    return datetime.fromtimestamp(us / 1e6, UTC).strftime("%H:%M:%S.%f")[:-3] + "Z"


def format_phase(p: dict[str, Any]) -> list[str]:
    ended = (f"ended {_clock_time(p['ended_us'])} on “{p['end_trigger']}”" if p["ended_us"]
             else "still open")
    lines = [
        f"Phase         row {p['row']} ({p['matter']}, {p['stage']}) case {p['case']}"
        f" officer {p['officer']}",
        f"              started {_clock_time(p['started_us'])}, {ended};"
        f" {len(p['segments'])} segments, {p['recorded_us'] / 1e6:.1f} s recorded",
        f"              notice to the party: {'given' if p['notice_given'] else 'NOT RECORDED'}",
    ]
    for e in p["refusals"]:
        lines.append(f"              refused {e['detail'].get('action')} at {_clock_time(e['t'])}:"
                     f" {e['detail'].get('reason')}")
    for e in p["events"]:
        if e["event"] not in ("refused", "phase_ended", "notice_given"):
            lines.append(f"              {e['event']} at {_clock_time(e['t'])}")
    for finding in p["findings"]:
        lines.append(f"  FINDING: {finding}")
    return lines


def _emit(args: argparse.Namespace, report: DockReport) -> None:
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=_json_default))
    else:
        print(format_report(report))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return obj.hex()
    raise TypeError(f"not JSON: {type(obj).__name__}")


def _sim_config(args: argparse.Namespace) -> SimConfig:
    return SimConfig(segments=args.segments, segment_ms=args.segment_ms, bitrate=args.bitrate,
                     skew_us=args.skew_us, drift_ppm=args.drift_ppm, main_pct=args.main_pct,
                     backup_pct=args.backup_pct, fault=args.fault, unit_key=args.unit_key,
                     pre_event_s=args.pre_event_s)


# -- commands -------------------------------------------------------------------------------
def _mqtt_transport(broker: str, device_id: str,
                    args: argparse.Namespace | None = None) -> Transport:
    from host_agent.mqtt_transport import MqttTransport, read_password

    host, _, port = broker.rpartition(":")
    ca, cert, key, user, pw_file = (getattr(args, name, None) for name in (
        "mqtt_ca", "mqtt_cert", "mqtt_key", "mqtt_user", "mqtt_password_file"))
    return MqttTransport(host or "127.0.0.1", int(port), device_id, ca=ca, cert=cert, key=key,
                         username=user, password=read_password(pw_file) if pw_file else None)


def _add_mqtt_auth_options(p: argparse.ArgumentParser, recorder: bool) -> None:
    """TLS and credentials for a production broker (deploy/mosquitto/README.md)."""
    who = "the recorder's, CN = its device id" if recorder else "the dock's, CN = dock"
    p.add_argument("--mqtt-ca", metavar="FILE", help="TLS: verify the broker against this CA")
    p.add_argument("--mqtt-cert", metavar="FILE", help=f"TLS client certificate ({who})")
    p.add_argument("--mqtt-key", metavar="FILE", help="the client certificate's private key")
    p.add_argument("--mqtt-user", metavar="NAME", help="MQTT user name (password auth)")
    p.add_argument("--mqtt-password-file", metavar="FILE", help="file holding the MQTT password")
    if recorder:
        p.add_argument("--mqtt-server-name", metavar="NAME",
                       help="name in the broker's certificate, if not the host of --mqtt")


def _demo_phase(rec: SimulatedRecorder, segment_ms: int) -> None:
    """An on-site investigation (annex row 4) with a refused pause, as an officer would do it."""
    rec.wait_for("ready for the dock", timeout=60)
    steps = [
        ("phase_start 4 GXSL-2026-0417 4501-0233", 0.5),
        ("notice whole process recorded", 0.3),
        ("pause", 0.3),  # refused: row 4 is recorded without interruption
        ("bookmark", max(0.3, segment_ms / 1000)),
        ("end_request investigation ends", 0.1),
        ("end_confirm", 0.3),
        ("stop", 0.0),
    ]
    for action, pause_s in steps:
        rec.press(action)
        time.sleep(pause_s)
    rec.wait_for("device: indicator: idle\n", timeout=30)


def cmd_demo(args: argparse.Namespace) -> int:
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bodycam-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    if not args.json:
        print(f"Recording {args.segments} segments of {args.segment_ms} ms on a simulated "
              f"recorder (MicroPython), then docking it over "
              f"{'MQTT (mosquitto)' if args.mqtt else 'a serial line (pty)'}…", file=sys.stderr)
    with ExitStack() as stack:
        config = _sim_config(args)
        if args.mqtt:
            from host_agent.broker import Mosquitto

            broker = stack.enter_context(Mosquitto(base / "broker"))
            config.mqtt = f"{broker.host}:{broker.port}"
            config.device_id = config.device_id or "SIM-DEMO-" + base.name[-6:].upper()
        rec = stack.enter_context(SimulatedRecorder(base / "device", config, base / "device.log"))
        vault = stack.enter_context(Vault.open(base / "vault"))
        if args.phase:
            _demo_phase(rec, args.segment_ms)
        transport = (_mqtt_transport(config.mqtt, config.device_id) if args.mqtt
                     else SerialTransport(rec.port))
        transport.open()
        stack.callback(transport.close)
        try:
            session = DockSession(transport, vault, dock_id="demo-dock", enroll_unknown=True)
            report = dock(session, ProgressBar("offload"))
        except (SessionError, TransportError) as exc:
            print(f"demo failed: {exc}\n--- device log ---\n{rec.log_text()}", file=sys.stderr)
            return 1
    _emit(args, report)
    return 0 if not report.offload["quarantined"] else 1


def cmd_sim(args: argparse.Namespace) -> int:
    storage = Path(args.storage) if args.storage else Path(tempfile.mkdtemp(prefix="bodycam-sim-"))
    config = _sim_config(args)
    if args.mqtt:
        config.mqtt = args.mqtt
        config.device_id = config.device_id or "SIM-" + storage.name[-6:].upper()
        for name in ("mqtt_ca", "mqtt_cert", "mqtt_key", "mqtt_server_name", "mqtt_user",
                     "mqtt_password_file"):
            value = getattr(args, name)
            if value:  # the recorder process runs elsewhere: hand it absolute paths
                setattr(config, name, value if name in ("mqtt_user", "mqtt_server_name")
                        else str(Path(value).resolve()))
    rec = SimulatedRecorder(storage, config, storage.parent / "device.log").start()
    how = (f"--mqtt {args.mqtt} --device {config.device_id}" if args.mqtt
           else f"--port {rec.port}")
    print(f"recorder running; dock it with:\n  bodycam dock {how} --vault VAULT_DIR"
          f"\ndevice storage {storage}, log {rec.log_path}; Ctrl-C stops it", flush=True)
    stop = False

    def _on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _on_signal)
    try:
        while not stop and rec.proc is not None and rec.proc.poll() is None:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        rec.stop()
    return 0


def _open_port(args: argparse.Namespace) -> Transport:
    transport: Transport
    if args.mqtt:
        transport = _mqtt_transport(args.mqtt, args.device, args)
    else:
        transport = SerialTransport(args.port, baudrate=args.baud)
    transport.open()
    return transport


def cmd_dock(args: argparse.Namespace) -> int:
    with Vault.open(args.vault) as vault:
        try:
            transport = _open_port(args)
        except TransportError as exc:
            print(f"dock: {exc}", file=sys.stderr)
            return 2
        try:
            session = DockSession(transport, vault, dock_id=args.dock_id,
                                  enroll_unknown=args.enroll_unknown)
            signed = Path(args.policy).read_bytes() if args.policy else None
            report = dock(session, ProgressBar("offload"), policy=signed)
        except (SessionError, TransportError, VaultError, OSError) as exc:
            # Nothing was released that the vault does not hold; the next docking resumes.
            print(f"dock: {exc}", file=sys.stderr)
            return 2
        finally:
            transport.close()
    _emit(args, report)
    return 0 if report.readiness["ready"] and not report.offload["quarantined"] else 1


def cmd_dock_many(args: argparse.Namespace) -> int:
    """Dock every --port at once (a many-slot dock): one worker process per port."""
    from host_agent.multidock import dock_many

    signed = Path(args.policy).read_bytes() if args.policy else None
    results = dock_many(args.port, args.vault, processes=args.processes, dock_id=args.dock_id,
                        enroll_unknown=args.enroll_unknown, policy=signed, baudrate=args.baud)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2, default=_json_default))
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
    with Vault.open(args.vault) as vault:
        if args.public_key:
            try:
                device_id, public = args.device_id, bytes.fromhex(args.public_key)
            except ValueError:
                print("enroll: --public-key must be hex", file=sys.stderr)
                return 2
        else:
            try:
                transport = _open_port(args)
            except TransportError as exc:
                print(f"enroll: {exc}", file=sys.stderr)
                return 2
            try:
                session = DockSession(transport, vault, dock_id=args.dock_id)
                reply = session.request("hello", proto=1, dock=args.dock_id)
            except (SessionError, TransportError) as exc:
                print(f"enroll: {exc}", file=sys.stderr)
                return 2
            finally:
                transport.close()
            device_id, public = reply["device_id"], reply["public_key"]
        fingerprint = key_id(public).hex()
        if args.expect_fingerprint and args.expect_fingerprint.lower() != fingerprint:
            print(f"enroll: device {device_id} shows key {fingerprint}, not the expected "
                  f"{args.expect_fingerprint}: not enrolled", file=sys.stderr)
            return 2
        try:
            new = vault.enroll(device_id, public, by=args.dock_id, note=args.note)
        except VaultError as exc:
            print(f"enroll: {exc}", file=sys.stderr)
            return 2
    print(json.dumps({"device_id": device_id, "key_fingerprint": fingerprint, "new": new})
          if args.json else
          f"{'enrolled' if new else 'already enrolled'}: {device_id} key {fingerprint}")
    return 0


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
        records = sum(len(vault.records(str(d["device_id"]))) for d in vault.devices())
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
    from host_agent.timeline import device_timeline

    vault = _existing_vault(args.dir, "vault timeline")
    if vault is None:
        return 2
    with vault:
        devices = [args.device] if args.device else [str(d["device_id"]) for d in vault.devices()]
        out = {d: [p.to_dict() for p in device_timeline(vault, d)] for d in devices}
    if args.json:
        print(json.dumps(out, indent=2, default=_json_default))
    else:
        for device_id, phases in out.items():
            print(f"Recorder {device_id}: {len(phases)} phases")
            for p in phases:
                print("\n".join(format_phase(p)))
    return 0


def cmd_policy_keygen(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    key_path = out / "unit.key"
    if key_path.exists():
        print(f"policy keygen: {key_path} exists; not overwriting a unit key", file=sys.stderr)
        return 2
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(seed)
    public = private.public_key().public_bytes_raw().hex()
    (out / "unit.pub").write_text(public + "\n")
    print(f"unit key in {key_path} (keep it offline); public key {public}\n"
          f"commission recorders with it (simulator: bodycam sim --unit-key {public})")
    return 0


def cmd_policy_template(args: argparse.Namespace) -> int:
    from protocol.policy import annex

    print(json.dumps(annex(), indent=2, ensure_ascii=False))
    return 0


def cmd_policy_sign(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from protocol import policy

    try:
        doc = json.loads(Path(args.policy).read_text())
        seed = Path(args.key).read_bytes()
        private = Ed25519PrivateKey.from_private_bytes(seed)
        public = private.public_key().public_bytes_raw()
        signed = policy.sign(doc, key_id(public), private.sign)
    except (OSError, ValueError, policy.PolicyError) as exc:
        print(f"policy sign: {exc}", file=sys.stderr)
        return 2
    Path(args.out).write_bytes(signed)
    print(f"signed {policy.name(doc)} into {args.out} ({len(signed)} bytes)")
    return 0


def _int_in(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is not within {lo}..{hi}")
        return value

    return parse


def _add_sim_options(p: argparse.ArgumentParser) -> None:
    d = SimConfig()
    p.add_argument("--segments", type=_int_in(0, 10_000), default=d.segments)
    p.add_argument("--segment-ms", type=_int_in(10, 3_600_000), default=d.segment_ms)
    p.add_argument("--bitrate", type=_int_in(8_000, 1_000_000_000), default=d.bitrate,
                   help="camera bits/s")
    p.add_argument("--skew-us", type=int, default=d.skew_us, help="device clock error at boot")
    p.add_argument("--drift-ppm", type=_int_in(-10_000, 10_000), default=d.drift_ppm)
    p.add_argument("--main-pct", type=_int_in(0, 100), default=d.main_pct)
    p.add_argument("--backup-pct", type=_int_in(0, 100), default=d.backup_pct)
    p.add_argument("--fault", default="", help="make the self-test report this fault")
    p.add_argument("--unit-key", default="", help="commission with this unit public key (hex)")
    p.add_argument("--pre-event-s", type=_int_in(-1, 120), default=0,
                   help="pre-event buffer in standby (-1: the policy's)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bodycam", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument("--log-json", action="store_true", help="logs as JSON lines on stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="simulated recorder docked end to end")
    p.add_argument("--json", action="store_true")
    p.add_argument("--mqtt", action="store_true", help="dock over a mosquitto broker it starts")
    p.add_argument("--no-phase", dest="phase", action="store_false",
                   help="skip the enforcement phase (row 4) with its refused pause")
    p.add_argument("--dir", help="where the vault and device storage go (default: a new temp dir)")
    _add_sim_options(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("sim", help="run a simulated recorder on a pty")
    p.add_argument("--storage", help="device storage directory (kept across runs)")
    p.add_argument("--mqtt", metavar="HOST:PORT", help="dock over this MQTT broker")
    _add_mqtt_auth_options(p, recorder=True)
    _add_sim_options(p)
    p.set_defaults(func=cmd_sim)

    for name, func in (("dock", cmd_dock), ("enroll", cmd_enroll)):
        p = sub.add_parser(name)
        p.add_argument("--port", help="serial port (pyserial URL)")
        p.add_argument("--mqtt", metavar="HOST:PORT", help="dock over this MQTT broker instead")
        p.add_argument("--device", help="with --mqtt: the recorder's device id")
        _add_mqtt_auth_options(p, recorder=False)
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

    p = sub.add_parser("policy", help="the unit's recording policy (Art. 12)")
    psub = p.add_subparsers(dest="policy_command", required=True)
    k = psub.add_parser("keygen", help="make the unit's policy-signing key")
    k.add_argument("--out", required=True, help="directory for unit.key and unit.pub")
    k.set_defaults(func=cmd_policy_keygen)
    t = psub.add_parser("template", help="print the annex as a policy document to refine")
    t.set_defaults(func=cmd_policy_template)
    g = psub.add_parser("sign", help="check and sign a refined policy")
    g.add_argument("policy", help="policy JSON (start from `bodycam policy template`)")
    g.add_argument("--key", required=True, help="unit.key")
    g.add_argument("--out", required=True, help="signed policy, for `bodycam dock --policy`")
    g.set_defaults(func=cmd_policy_sign)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose, args.log_json)
    if args.command in ("dock", "enroll") and args.mqtt and not args.device:
        parser.error(f"{args.command} --mqtt needs --device ID")
    if args.command == "dock" and not (args.port or args.mqtt):
        parser.error("dock needs --port or --mqtt")
    if args.command == "enroll" and not (args.port or args.mqtt) and not (
            args.device_id and args.public_key):
        parser.error("enroll needs --port or --mqtt, or --device-id with --public-key")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
