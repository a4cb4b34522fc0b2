"""`bodycam demo` and `bodycam sim`: the only commands that load the lab rig (host_agent/lab/),
and they load it only when they run."""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from host_agent.cli.dock_commands import mqtt_transport
from host_agent.cli.options import int_in
from host_agent.cli.output import ProgressBar, emit, fail
from host_agent.dock import DockSession, SessionError, dock
from host_agent.keys import KeyFileError, public_key
from host_agent.transport import TransportError
from host_agent.transport.serial import SerialTransport
from host_agent.vault import Vault, VaultError

if TYPE_CHECKING:
    from host_agent.lab.simulator import SimConfig, SimulatedRecorder

# What `bodycam sim` and `demo` pass on to the simulated recorder (SimConfig fields).
_SIM_OPTIONS = ("segments", "segment_ms", "bitrate", "skew_us", "drift_ppm", "main_pct",
                "backup_pct", "fault", "unit_key", "pre_event_s")


def add_sim_options(p: argparse.ArgumentParser) -> None:
    """The simulated recorder's options; unset ones keep SimConfig's defaults."""
    p.add_argument("--segments", type=int_in(0, 10_000), help="segments to record at boot (3)")
    p.add_argument("--segment-ms", type=int_in(10, 3_600_000), help="segment length (1000)")
    p.add_argument("--bitrate", type=int_in(8_000, 1_000_000_000), help="camera bits/s")
    p.add_argument("--skew-us", type=int_in(-10**15, 10**15),
                   help="device clock error at boot")
    p.add_argument("--drift-ppm", type=int_in(-10_000, 10_000))
    p.add_argument("--main-pct", type=int_in(0, 100))
    p.add_argument("--backup-pct", type=int_in(0, 100))
    p.add_argument("--fault", help="make the self-test report this fault")
    p.add_argument("--unit-key", type=_unit_key, metavar="UNIT.pub|HEX",
                   help="commission the recorder to this unit (its public key)")
    p.add_argument("--pre-event-s", type=int_in(-1, 120), default=0,
                   help="pre-event buffer in standby (-1: the policy's)")


def _unit_key(text: str) -> str:
    try:
        return public_key(text).hex()
    except KeyFileError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _sim_config(args: argparse.Namespace) -> SimConfig:
    from host_agent.lab.simulator import SimConfig

    given = {name: getattr(args, name) for name in _SIM_OPTIONS
             if getattr(args, name, None) is not None}
    return SimConfig(**given)


def _need_micropython(command: str) -> bool:
    from host_agent.lab.simulator import micropython_command

    try:
        micropython_command()
    except RuntimeError as exc:
        fail(command, exc)
        return False
    return True


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
    from host_agent.lab.broker import BrokerError, Mosquitto
    from host_agent.lab.simulator import SimulatedRecorder
    from host_agent.lab.unit import lab_unit

    if not _need_micropython("demo"):
        return 2
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bodycam-demo-"))
    config = _sim_config(args)
    if not args.json:
        print(f"Recording {config.segments} segments of {config.segment_ms} ms on a simulated "
              f"recorder (MicroPython), then docking it over "
              f"{'MQTT (mosquitto)' if args.mqtt else 'a serial line (pty)'}…", file=sys.stderr)
    with ExitStack() as stack:
        try:
            base.mkdir(parents=True, exist_ok=True)
            unit, identity = lab_unit(base, "demo-dock")
            config.unit_key = unit.public.hex()  # commissioned to the demo's unit
            vault = stack.enter_context(Vault.open(base / "vault"))
            if args.mqtt:
                broker = stack.enter_context(Mosquitto(base / "broker"))
                config.mqtt = f"{broker.host}:{broker.port}"
                config.device_id = config.device_id or "SIM-DEMO-" + base.name[-6:].upper()
        except (OSError, VaultError, BrokerError, KeyFileError) as exc:
            print(f"demo: {exc}", file=sys.stderr)
            return 2
        rec = stack.enter_context(SimulatedRecorder(base / "device", config,
                                                    base / "device.log"))
        try:
            if args.phase:
                _demo_phase(rec, config.segment_ms)
            transport = (mqtt_transport(config.mqtt, config.device_id) if args.mqtt
                         else SerialTransport(rec.port))
            transport.open()
            stack.callback(transport.close)
            session = DockSession(transport, vault, identity, enroll_unknown=True)
            report = dock(session, ProgressBar("offload"))
        except (SessionError, TransportError, VaultError, RuntimeError) as exc:
            print(f"demo failed: {exc}\n--- device log ---\n{rec.log_text()}", file=sys.stderr)
            return 1
    emit(args, report)
    return 0 if not report.offload["quarantined"] else 1


def cmd_sim(args: argparse.Namespace) -> int:
    from host_agent.lab.simulator import SimulatedRecorder

    if not _need_micropython("sim"):
        return 2
    storage = Path(args.storage) if args.storage else Path(tempfile.mkdtemp(prefix="bodycam-sim-"))
    if storage.exists() and not storage.is_dir():
        print(f"sim: --storage {storage} is a file, not a directory", file=sys.stderr)
        return 2
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
    rec = SimulatedRecorder(storage, config, storage.parent / "device.log")
    try:
        rec.start()
        rec.wait_for("ready for the dock", timeout=60)
    except (OSError, RuntimeError):
        rec.stop()
        print(f"sim: the recorder did not start: {_last_words(rec.log_text())}\n"
              f"(its log: {rec.log_path})", file=sys.stderr)
        return 1
    how = (f"--mqtt {args.mqtt} --device {config.device_id}" if args.mqtt
           else f"--port {rec.port}")
    from host_agent.lab.unit import device_fingerprint

    fingerprint = device_fingerprint(storage)
    commissioned = (f"commissioned to unit key {config.unit_key[:16]}…" if config.unit_key else
                    "NOT commissioned (--unit-key): no dock can offload it")
    print(f"recorder running, {commissioned}; key fingerprint {fingerprint}\n"
          f"enrol it, then dock it:\n"
          f"  bodycam enroll {how} --vault VAULT_DIR --expect-fingerprint"
          f" {fingerprint}\n  bodycam dock {how} --vault VAULT_DIR"
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
        died = rec.proc is not None and rec.proc.poll() not in (None, 0) and not stop
        rec.stop()
    if died:
        print(f"sim: the recorder stopped: {_last_words(rec.log_text())}\n"
              f"(its log: {rec.log_path})", file=sys.stderr)
        return 1
    return 0


def _last_words(log: str) -> str:
    """What a recorder said last before it died: the error line of its firmware's report."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    return lines[-1] if lines else "it printed nothing"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from host_agent.cli.dock_commands import add_mqtt_auth_options

    p = sub.add_parser("demo", help="simulated recorder docked end to end")
    p.add_argument("--json", action="store_true")
    p.add_argument("--mqtt", action="store_true", help="dock over a mosquitto broker it starts")
    p.add_argument("--no-phase", dest="phase", action="store_false",
                   help="skip the enforcement phase (row 4) with its refused pause")
    p.add_argument("--dir", help="where the vault and device storage go (default: a new temp dir)")
    add_sim_options(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("sim", help="run a simulated recorder on a pty")
    p.add_argument("--storage", help="device storage directory (kept across runs)")
    p.add_argument("--mqtt", metavar="HOST:PORT", help="dock over this MQTT broker")
    add_mqtt_auth_options(p, recorder=True)
    add_sim_options(p)
    p.set_defaults(func=cmd_sim)
