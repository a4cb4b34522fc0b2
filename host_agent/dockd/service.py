"""`bodycam dockd`: the dock PC's service. It serves whatever recorder arrives, all day.

With [central] in the config, the vault is also forwarded to the central tier
every `interval_s` (host_agent/dockd/forwarding.py), in a process of its own.

Arrivals: serial ports matching the config's `watch` patterns (and none of `ignore`), looked
at every `poll_s` (a udev event wakes the look at once where pyudev is installed), and
recorders on MQTT whose retained status topic (`bodycam/<id>/status`) says "online". Each
arrival gets a slot served by a worker process (host_agent/dockd/slot.py); a slot whose
worker failed while its recorder is still there is served again after a pause that grows
(5 s, 10 s, … 60 s); a released recorder is left alone until it leaves and comes back.
Departures: the port is gone, or the status says "offline" (the recorder's last will): the
slot's worker is stopped and the slot forgotten.

SIGTERM or SIGINT: stop looking, SIGTERM every worker (each abandons its transfer without a
half-stored segment), wait for them (at most `STOP_WAIT_S`, then SIGKILL, which the vault
also survives), tell systemd, exit 0. Under systemd (`Type=notify`) the service says READY
once it is serving, and pings the watchdog while its loop runs.

State for `bodycam status`: state_dir/daemon.json (pid, config, started) and one file per
slot in state_dir/slots/.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.context import ForkServerProcess
from pathlib import Path
from typing import Any

from host_agent.dockd import slot
from host_agent.dockd.config import Config
from host_agent.dockd.notify import Notifier
from host_agent.dockd.slot import SlotSpec
from host_agent.logs import LOG_JSON_ENV, setup_logging

log = logging.getLogger("bodycam.dockd")

STOP_WAIT_S = 10.0
RETRY_S = (5.0, 10.0, 20.0, 40.0, 60.0)


@dataclass
class Slot:
    spec: SlotSpec
    process: ForkServerProcess | None = None
    outcome: int | None = None  # the last worker's exit status
    failures: int = 0
    retry_at: float = 0.0


class MqttWatcher:
    """Which recorders are online on the broker: their retained status topics."""

    def __init__(self, cfg: Config, wake: threading.Event) -> None:
        import paho.mqtt.client as mqtt

        from host_agent.transport.mqtt import TOPIC_ROOT, read_password, tls_context

        m = cfg.mqtt
        assert m is not None
        self.online: dict[str, bool] = {}
        self._lock = threading.Lock()
        self._wake = wake
        self._filter = f"{TOPIC_ROOT}/+/status"
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id=f"bodycam-dockd-{os.getpid()}",
                             protocol=mqtt.MQTTv311, clean_session=True)
        if m.ca:
            client.tls_set_context(tls_context(m.ca, m.cert or None, m.key or None))
        if m.user:
            client.username_pw_set(m.user, read_password(m.password_file)
                                   if m.password_file else None)
        client.reconnect_delay_set(1, 10)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        self.client = client
        self.host, self.port = m.host, m.port

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                    properties: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("mqtt %s:%d refused the daemon: %s", self.host, self.port, reason)
            return
        client.subscribe(self._filter, qos=1)
        log.info("mqtt %s:%d: watching %s", self.host, self.port, self._filter)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        parts = str(msg.topic).split("/")
        if len(parts) != 3:
            return
        device_id, status = parts[1], msg.payload.decode(errors="replace")
        with self._lock:
            self.online[device_id] = status == "online"
        self._wake.set()

    def devices(self) -> set[str]:
        with self._lock:
            return {d for d, up in self.online.items() if up}


class Daemon:
    def __init__(self, cfg: Config, notifier: Notifier | None = None) -> None:
        self.cfg = cfg
        self.notifier = notifier or Notifier()
        self.slots: dict[str, Slot] = {}
        self.wake = threading.Event()
        self.stopping = False
        # workers fork from a forkserver that imported the dock code once: a new recorder's
        # worker starts in milliseconds, and none of this process's threads go with it
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(["host_agent.dockd.slot", "host_agent.dockd.forwarding"])
        self.mqtt: MqttWatcher | None = None
        self._udev: Any = None
        self.state_dir = Path(cfg.state_dir)
        self.forwarder: ForkServerProcess | None = None
        self.forward_at = 0.0

    # -- discovery -------------------------------------------------------------------------------

    def serial_ports(self) -> set[str]:
        found: set[str] = set()
        for pattern in self.cfg.watch:
            found.update(glob.glob(pattern))
        ignored: set[str] = set()
        for pattern in self.cfg.ignore:
            ignored.update(glob.glob(pattern))
        return {p for p in found if p not in ignored and os.path.exists(p)}

    def arrivals(self) -> set[SlotSpec]:
        here = {SlotSpec("serial", p) for p in self.serial_ports()}
        if self.mqtt is not None:
            here |= {SlotSpec("mqtt", d) for d in self.mqtt.devices()}
        return here

    def _start_udev(self) -> None:
        """Wake the loop on a tty being added or removed (where pyudev is installed)."""
        try:
            import pyudev  # type: ignore[import-not-found]
        except ImportError:
            return
        try:
            monitor = pyudev.Monitor.from_netlink(pyudev.Context())
            monitor.filter_by("tty")
            self._udev = pyudev.MonitorObserver(monitor, lambda *a: self.wake.set())
            self._udev.start()
            log.info("udev: waking on tty events")
        except Exception as exc:  # noqa: BLE001 - udev is an optimisation; polling stays
            log.info("udev unavailable (%s): polling only", exc)

    # -- slots -----------------------------------------------------------------------------------

    def _start(self, s: Slot) -> None:
        s.process = self.ctx.Process(target=_worker, args=(s.spec, self.cfg),
                                     name=f"slot {s.spec.name}", daemon=False)
        s.process.start()
        log.info("%s: serving (worker %d)", s.spec.name, s.process.pid)

    def step(self) -> None:
        """One look: start slots for arrivals, reap workers, stop slots whose recorder left."""
        now = time.monotonic()
        here = self.arrivals()
        for spec in here:
            s = self.slots.get(spec.name)
            if s is None:
                s = self.slots[spec.name] = Slot(spec)
                self._start(s)
        for name, s in list(self.slots.items()):
            p = s.process
            if p is not None and not p.is_alive():
                p.join()
                s.outcome, s.process = p.exitcode, None
                if s.outcome == slot.RELEASED:
                    s.failures = 0
                else:
                    s.failures += 1
                    s.retry_at = now + RETRY_S[min(s.failures, len(RETRY_S)) - 1]
            if s.spec not in here:
                log.info("%s: gone", name)
                self._stop_worker(s)
                self._forget(s)
                del self.slots[name]
            elif (s.process is None and s.outcome not in (slot.RELEASED, None)
                  and now >= s.retry_at):
                self._start(s)

    def forward(self) -> None:
        """Start a forwarding pass to the central when one is due and none is running."""
        if not self.cfg.central_url:
            return
        p = self.forwarder
        if p is not None:
            if p.is_alive():
                return
            p.join()
            self.forwarder = None
        now = time.monotonic()
        if now < self.forward_at:
            return
        self.forward_at = now + self.cfg.forward_s
        self.forwarder = self.ctx.Process(target=_forward_worker, args=(self.cfg,),
                                          name="forward", daemon=False)
        self.forwarder.start()

    def _stop_worker(self, s: Slot) -> None:
        p = s.process
        if p is None:
            return
        if p.is_alive() and p.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGTERM)
        p.join(STOP_WAIT_S)
        if p.is_alive():
            log.warning("%s: worker did not stop in %.0f s; killed", s.spec.name, STOP_WAIT_S)
            p.kill()
            p.join()
        s.process = None

    def _forget(self, s: Slot) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / "slots" / s.spec.file_name).unlink()

    # -- the service -----------------------------------------------------------------------------

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        (self.state_dir / "slots").mkdir(parents=True, exist_ok=True)
        for stale in (self.state_dir / "slots").glob("*.json"):
            stale.unlink()  # left by a daemon that was killed
        _write_json(self.state_dir / "daemon.json", {
            "pid": os.getpid(), "config": self.cfg.path, "vault": self.cfg.vault,
            "started": time.time(), "watch": list(self.cfg.watch),
            "mqtt": f"{self.cfg.mqtt.host}:{self.cfg.mqtt.port}" if self.cfg.mqtt else None})
        if self.cfg.mqtt is not None:
            self.mqtt = MqttWatcher(self.cfg, self.wake)
            self.mqtt.start()
        self._start_udev()
        self.notifier.ready(f"serving {', '.join(self.cfg.watch)}"
                            + (f" and mqtt {self.cfg.mqtt.host}" if self.cfg.mqtt else ""))
        log.info("dockd: serving (config %s, vault %s)", self.cfg.path, self.cfg.vault)
        last_ping = 0.0
        try:
            while not self.stopping:
                self.step()
                self.forward()
                now = time.monotonic()
                if self.notifier.watchdog_s and now - last_ping >= self.notifier.watchdog_s:
                    self.notifier.watchdog()
                    last_ping = now
                    self.notifier.status(self.summary())
                self.wake.wait(self.cfg.poll_s)
                self.wake.clear()
        finally:
            self.shutdown()
        return 0

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stopping = True
        self.wake.set()

    def shutdown(self) -> None:
        self.notifier.stopping()
        log.info("dockd: stopping %d slot(s)", sum(1 for s in self.slots.values()
                                                   if s.process is not None))
        for s in self.slots.values():
            if s.process is not None and s.process.is_alive() and s.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(s.process.pid, signal.SIGTERM)
        for s in self.slots.values():
            self._stop_worker(s)
        if self.forwarder is not None:
            if self.forwarder.is_alive() and self.forwarder.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.forwarder.pid, signal.SIGTERM)  # idempotent: the next resumes
            self.forwarder.join(STOP_WAIT_S)
            if self.forwarder.is_alive():
                self.forwarder.kill()
                self.forwarder.join()
        if self.mqtt is not None:
            self.mqtt.stop()
        if self._udev is not None:
            self._udev.stop()
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / "daemon.json").unlink()
        self.notifier.close()
        log.info("dockd: stopped")

    def summary(self) -> str:
        busy = sum(1 for s in self.slots.values() if s.process is not None)
        return f"{len(self.slots)} slot(s), {busy} docking"


def _worker(spec: SlotSpec, cfg: Config) -> None:
    """A slot's worker process (forked by the forkserver: none of the daemon's threads)."""
    setup_logging(logging.INFO, json_lines=bool(os.environ.get(LOG_JSON_ENV)))
    raise SystemExit(slot.serve(spec, cfg))


def _forward_worker(cfg: Config) -> None:
    """The forwarding pass's process (forked by the forkserver, like the slots' workers)."""
    from host_agent.dockd import forwarding

    setup_logging(logging.INFO, json_lines=bool(os.environ.get(LOG_JSON_ENV)))
    raise SystemExit(forwarding.run(cfg))


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, sort_keys=True))
    os.replace(tmp, path)

