"""The dock service as systemd runs it: started from its unit file's command line, it serves
recorders that arrive at different times — two on serial ports appearing in the watched
directory (as /dev/serial/by-id links do), one on MQTT — empties each, releases each for duty
once ready, keeps re-checking one that is not ready, and stops cleanly on SIGTERM in the middle
of a transfer: nothing half-stored, nothing lost, the next start finishes the job."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from host_agent.lab.broker import Mosquitto
from host_agent.lab.simulator import SimConfig, SimulatedRecorder
from host_agent.lab.unit import lab_unit
from host_agent.vault import Vault

REPO = Path(__file__).resolve().parents[2]


def wait_until(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def unit_command(config: Path) -> list[str]:
    """ExecStart of the shipped unit file, with this checkout's bodycam and our config."""
    unit = (resources.files("host_agent") / "deploy" / "dockd" / "bodycam-dockd.service"
            ).read_text()
    (line,) = [ln for ln in unit.splitlines() if ln.startswith("ExecStart=")]
    argv = shlex.split(line.removeprefix("ExecStart="))
    assert argv[0].endswith("/bodycam") and "--config" in argv
    argv[argv.index("--config") + 1] = str(config)
    return [sys.executable, "-m", "host_agent.cli", *argv[1:]]


class Rig:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.unit, self.identity = lab_unit(base / "pki", "dock-1")
        Vault.open(base / "vault").close()
        self.by_id = base / "by-id"
        self.by_id.mkdir()
        self.state = base / "state"
        self.broker = Mosquitto(base / "broker").start()
        self.recorders: list[SimulatedRecorder] = []
        self.config = base / "dock.toml"
        self.config.write_text(f"""
[dock]
identity = "{base / 'pki' / 'dock-1'}"
vault = "{base / 'vault'}"
state_dir = "{self.state}"
enroll_unknown = true
recheck_s = 1
timeout_s = 10

[serial]
watch = ["{self.by_id}/*"]
poll_s = 0.2

[mqtt]
broker = "{self.broker.host}:{self.broker.port}"
""")
        self.notify_path = base / "notify.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.notify.settimeout(0.1)
        self.notes: list[str] = []
        self.listening = True
        self.listener = threading.Thread(target=self._listen, daemon=True)
        self.listener.start()  # as systemd does: every note is read as it comes
        self.daemon: subprocess.Popen[str] | None = None

    def _listen(self) -> None:
        while self.listening:
            try:
                self.notes += self.notify.recv(4096).decode().split("\n")
            except TimeoutError:
                continue

    def start_daemon(self) -> None:
        env = dict(os.environ, NOTIFY_SOCKET=str(self.notify_path), WATCHDOG_USEC="1000000")
        self.daemon = subprocess.Popen(unit_command(self.config), cwd=REPO, env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def notes_so_far(self) -> list[str]:
        return list(self.notes)

    def recorder(self, name: str, *, serial: bool = True, **config: Any) -> SimulatedRecorder:
        rec = SimulatedRecorder(self.base / name, SimConfig(
            unit_key=self.unit.public.hex(), segment_ms=300, **config),
            self.base / f"{name}.log").start()
        self.recorders.append(rec)
        rec.wait_for("ready for the dock", timeout=60)
        if serial:
            (self.by_id / f"usb-bodycam_{name}-if00").symlink_to(rec.port)
        return rec

    def status(self) -> dict[str, Any]:
        proc = subprocess.run([sys.executable, "-m", "host_agent.cli", "status", "--config",
                               str(self.config), "--json"], cwd=REPO, capture_output=True,
                              text=True, timeout=30)
        return dict(json.loads(proc.stdout))

    def slot(self, device_or_target: str) -> dict[str, Any] | None:
        for s in self.status()["slots"]:
            if device_or_target == s.get("device") or device_or_target in s["slot"]:
                return dict(s)
        return None

    def state_of(self, key: str) -> str | None:
        s = self.slot(key)
        return None if s is None else str(s["state"])

    def stored(self, device_id: str) -> int:
        with Vault.open(self.base / "vault", create=False) as v:
            return len(v.records(device_id))

    def close(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.kill()
            self.daemon.wait()
        for rec in self.recorders:
            rec.stop()
        self.broker.stop()
        self.listening = False
        self.listener.join()
        self.notify.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.close()


def pending(rec: SimulatedRecorder) -> int:
    """Records still on the recorder's card (not released)."""
    return len([p for p in Path(rec.storage).rglob("*.cose")])


def test_dockd_serves_arrivals_releases_when_ready_and_stops_cleanly(rig: Rig) -> None:
    rig.start_daemon()
    wait_until("READY=1 from the daemon", lambda: "READY=1" in rig.notes_so_far())

    first = rig.recorder("rec-a", segments=2)
    wait_until("rec-a released", lambda: rig.state_of("rec-a") == "released")
    a = rig.slot("rec-a")
    assert a is not None and a["readiness"]["ready"]
    device_a = str(a["device"])
    assert rig.stored(device_a) >= 3 and pending(first) == 0

    mqtt_rec = rig.recorder("rec-m", serial=False, segments=2, mqtt=f"{rig.broker.host}:"
                            f"{rig.broker.port}", device_id="SIM-MQTT-1")
    wait_until("the MQTT recorder released", lambda: rig.state_of("SIM-MQTT-1") == "released")
    assert rig.stored("SIM-MQTT-1") >= 3 and pending(mqtt_rec) == 0

    # a recorder on a weak battery: emptied, not released, re-checked while it sits there
    weak = rig.recorder("rec-w", segments=1, main_pct=50)
    wait_until("rec-w charging", lambda: rig.state_of("rec-w") == "charging")
    w = rig.slot("rec-w")
    assert w is not None and "main battery 50%" in "; ".join(w["readiness"]["reasons"])
    with Vault.open(rig.base / "vault", create=False) as v:
        first_count = len(v.dockings(str(w["device"])))
    wait_until("a second readiness check", lambda: len(Vault.open(
        rig.base / "vault", create=False).dockings(str(w["device"]))) > first_count)
    assert pending(weak) == 0  # emptied all the same

    # one that charges in the dock: not ready at first, released once its battery is up
    charging = rig.recorder("rec-c", segments=1, main_pct=70, main_charge=3600)  # 1 %/s
    wait_until("rec-c seen not ready", lambda: (s := rig.slot("rec-c")) is not None
               and s.get("readiness") is not None)
    first_look = rig.slot("rec-c")
    assert first_look is not None and not first_look["readiness"]["ready"]
    wait_until("rec-c released once charged", lambda: rig.state_of("rec-c") == "released")
    assert pending(charging) == 0

    # the status a person reads
    shown = subprocess.run([sys.executable, "-m", "host_agent.cli", "status", "--config",
                            str(rig.config)], cwd=REPO, capture_output=True, text=True,
                           timeout=30).stdout
    assert "released" in shown and "not ready: main battery 50%" in shown
    assert "WATCHDOG=1" in rig.notes_so_far()

    # a big recorder arrives; SIGTERM while its segments are coming in
    big = rig.recorder("rec-big", segments=12, bitrate=200_000_000)
    wait_until("rec-big offloading", lambda: (s := rig.slot("rec-big")) is not None
               and s["state"] == "offloading" and s.get("done", 0) > 0, timeout=60)
    big_id = str(rig.slot("rec-big")["device"])  # type: ignore[index]
    assert rig.daemon is not None
    stop_at = time.monotonic()
    rig.daemon.send_signal(signal.SIGTERM)
    out, err = rig.daemon.communicate(timeout=30)
    stopped_in = time.monotonic() - stop_at
    assert rig.daemon.returncode == 0, err
    assert "Traceback" not in err
    assert stopped_in < 15, f"the daemon took {stopped_in:.1f} s to stop"
    assert "STOPPING=1" in rig.notes_so_far()
    with Vault.open(rig.base / "vault", create=False) as v:
        assert v.verify_report().problems == []
        assert list((rig.base / "vault" / "tmp").iterdir()) == []  # no half-stored segment
    left = pending(big)
    assert left > 0  # the transfer was cut: the rest is still on the recorder

    # the next start finishes the job: nothing lost
    (rig.by_id / "usb-bodycam_rec-a-if00").unlink()
    rig.start_daemon()
    wait_until("rec-big released", lambda: rig.state_of("rec-big") == "released", timeout=90)
    assert pending(big) == 0
    assert rig.daemon is not None
    rig.daemon.send_signal(signal.SIGTERM)
    rig.daemon.communicate(timeout=30)
    with Vault.open(rig.base / "vault", create=False) as v:
        assert v.verify_report().problems == []
        assert len(v.records(big_id)) >= 13  # every segment, and the signed clock step


def test_unplugged_mid_offload_a_silent_port_and_the_others_still_served(rig: Rig) -> None:
    from host_agent.lab.nullmodem import NullModem

    silent = NullModem().start()  # a port with nothing behind it (a modem, a dead recorder)
    try:
        (rig.by_id / "usb-something_else-if00").symlink_to(silent.host_path)
        rig.start_daemon()
        big = rig.recorder("rec-u", segments=12, bitrate=200_000_000)
        wait_until("rec-u offloading", lambda: (s := rig.slot("rec-u")) is not None
                   and s["state"] == "offloading" and s.get("done", 0) > 0)
        device = str(rig.slot("rec-u")["device"])  # type: ignore[index]
        # unplugged: the link goes, then the port's name
        big.stop()
        (rig.by_id / "usb-bodycam_rec-u-if00").unlink()
        wait_until("the slot forgotten", lambda: rig.slot("rec-u") is None)
        # the silent port is retried with a growing pause, and never stops the service
        wait_until("the silent port failed", lambda: rig.state_of("something_else") == "error",
                   timeout=60)
        other = rig.recorder("rec-o", segments=1)
        wait_until("rec-o released", lambda: rig.state_of("rec-o") == "released")
        assert pending(other) == 0
        # plugged in again: the same card, a new port; the offload resumes and completes
        stored_before = rig.stored(device)
        again = SimulatedRecorder(big.storage, big.config, rig.base / "rec-u2.log").start()
        rig.recorders.append(again)
        again.wait_for("ready for the dock", timeout=60)
        (rig.by_id / "usb-bodycam_rec-u-if00").symlink_to(again.port)
        wait_until("rec-u released", lambda: rig.state_of("rec-u") == "released", timeout=90)
        assert pending(again) == 0 and rig.stored(device) > stored_before
        assert rig.daemon is not None and rig.daemon.poll() is None
        rig.daemon.send_signal(signal.SIGTERM)
        _, err = rig.daemon.communicate(timeout=30)
        assert rig.daemon.returncode == 0 and "Traceback" not in err
        with Vault.open(rig.base / "vault", create=False) as v:
            assert v.verify_report().problems == []
    finally:
        silent.close()


@pytest.mark.parametrize(("text", "words"), [
    ('[dock]\nidentity = "pki/dock-1"\nvault = "vault"\nstate_dir = "s"\ncolour = "red"\n',
     ["dock.toml:5", "unknown key 'colour'"]),
    ('[dock]\nidentity = "pki/dock-1"\nvault = "vault"\nstate_dir = "s"\n\n[serial]\n'
     'baudrate = "fast"\n', ["dock.toml:7", "baudrate must be int"]),
    ('[dock]\nidentity = "pki/dock-1"\nvault = "elsewhere"\nstate_dir = "s"\n',
     ["dock.toml:3", "is not a vault"]),
    ('[dock]\nidentity = "pki/dock-1"\nstate_dir = "s"\n', ["[dock] needs vault"]),
    ('[docks]\nidentity = "x"\n', ["dock.toml:1", "unknown section [docks]"]),
    ('[dock\n', ["not TOML"]),
    ('[dock]\nidentity = "pki/dock-1"\nvault = "vault"\nstate_dir = "s"\n[mqtt]\n'
     'broker = "nowhere"\n', ["dock.toml:6", "not HOST:PORT"]),
])
def test_a_bad_config_is_one_line_naming_where(tmp_path: Path, text: str,
                                               words: list[str]) -> None:
    lab_unit(tmp_path / "pki", "dock-1")
    Vault.open(tmp_path / "vault").close()
    (tmp_path / "dock.toml").write_text(text)
    proc = subprocess.run([sys.executable, "-m", "host_agent.cli", "dockd", "--config",
                           str(tmp_path / "dock.toml")], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    for w in words:
        assert w in proc.stderr, (w, proc.stderr)
