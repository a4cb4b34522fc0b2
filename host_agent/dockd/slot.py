"""One slot of the daemon: a recorder on a serial port or on MQTT, served in a worker process.

A worker docks the recorder (`host_agent.dock.session.dock`: identify, clock, policy,
offload, readiness). If it is not ready for duty (charging, clock, a fault), the worker waits
`recheck_s` and docks it again — the clock re-synced, readiness re-checked, anything recorded
meanwhile offloaded — until it is ready: then the slot is "released" and the worker ends. A
recorder is served by one worker at a time, wherever it is plugged in: the worker takes the
recorder's lock (a file lock in state_dir/locks/) as soon as the recorder proved its identity,
and a second slot that finds it taken stops ("busy").

SIGTERM stops a worker at once: the transfer in flight is abandoned where it is. Nothing is
half-stored (the vault stores a segment in one transaction after its data is complete, and
a partial download is only a temporary file, removed), nothing unstored was released, and
the next docking resumes.

The slot's state is a JSON file state_dir/slots/<name>.json, replaced atomically: what
`bodycam status` shows.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import resource
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from host_agent.dock.session import DockSession, SessionError, dock
from host_agent.dockd.config import Config
from host_agent.keys import DockIdentity, KeyFileError
from host_agent.transport import Transport, TransportError
from host_agent.vault import Vault, VaultError

log = logging.getLogger("bodycam.dockd")

RELEASED, FAILED, STOPPED, BUSY = 0, 1, 3, 4  # a worker's exit status


class Stopping(BaseException):
    """SIGTERM in a worker: abandon what is in flight (BaseException: no handler swallows it)."""


@dataclass(frozen=True)
class SlotSpec:
    kind: str  # "serial" or "mqtt"
    target: str  # the port, or the device id

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.target}"

    @property
    def file_name(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]", "_", self.name)[-120:] + ".json"


class SlotState:
    """The slot's state file (written by its worker, read by the daemon and `bodycam status`)."""

    def __init__(self, state_dir: str, spec: SlotSpec) -> None:
        self.dir = Path(state_dir) / "slots"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / spec.file_name
        self.fields: dict[str, Any] = {"slot": spec.name, "kind": spec.kind,
                                       "target": spec.target, "pid": os.getpid()}
        self._last = 0.0

    def write(self, **fields: Any) -> None:
        use = resource.getrusage(resource.RUSAGE_SELF)
        self.fields.update(fields, updated=time.time(),
                           cpu_s=round(use.ru_utime + use.ru_stime, 3))
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.fields, sort_keys=True))
        os.replace(tmp, self.path)

    def progress(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last >= 0.25 or done >= total:
            self._last = now
            self.write(done=done, total=total)


class DeviceLock:
    """The one-worker-per-recorder lock (flock: released by the kernel when the worker dies)."""

    def __init__(self, state_dir: str, device_id: str) -> None:
        self.device_id = device_id
        path = Path(state_dir) / "locks" / f"{device_id}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise SessionError(f"{device_id} is being docked in another slot") from None


def open_transport(spec: SlotSpec, cfg: Config) -> Transport:
    if spec.kind == "serial":
        from host_agent.transport.serial import SerialTransport

        transport: Transport = SerialTransport(spec.target, baudrate=cfg.baudrate)
    else:
        from host_agent.transport.mqtt import MqttTransport, read_password

        m = cfg.mqtt
        assert m is not None
        transport = MqttTransport(m.host, m.port, spec.target, ca=m.ca or None,
                                  cert=m.cert or None, key=m.key or None,
                                  username=m.user or None,
                                  password=read_password(m.password_file) if m.password_file
                                  else None)
    transport.open()
    return transport


def serve(spec: SlotSpec, cfg: Config) -> int:
    """The worker process's whole life; its exit status."""

    def stop(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: let the unwinding finish
        raise Stopping()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides; a terminal's ^C too
    state = SlotState(cfg.state_dir, spec)
    state.write(state="connecting", device=None, done=0, total=0, error="")
    lock: list[DeviceLock] = []
    try:
        policy = Path(cfg.policy).read_bytes() if cfg.policy else None
        identity = DockIdentity.load(Path(cfg.identity))
        with Vault.open(cfg.vault, create=False) as vault:
            while True:
                report = _dock_once(spec, cfg, vault, identity, policy, state, lock)
                readiness = report["readiness"]
                state.write(readiness={"ready": readiness["ready"],
                                       "reasons": readiness["reasons"]},
                            last_docking={"id": report["docking_id"], "at": time.time(),
                                          "stored": len(report["offload"]["stored"]),
                                          "bytes": report["offload"]["bytes"]})
                if readiness["ready"]:
                    state.write(state="released")
                    log.info("%s: %s released for duty", spec.name, report["device_id"])
                    return RELEASED
                state.write(state="charging")
                log.info("%s: %s not ready (%s); again in %.0f s", spec.name,
                         report["device_id"], "; ".join(readiness["reasons"]), cfg.recheck_s)
                time.sleep(cfg.recheck_s)
    except Stopping:
        state.write(state="stopped")
        return STOPPED
    except (SessionError, TransportError, VaultError, KeyFileError, OSError) as exc:
        busy = "in another slot" in str(exc)
        state.write(state="busy" if busy else "error", error=str(exc))
        (log.info if busy else log.warning)("%s: %s", spec.name, exc)
        return BUSY if busy else FAILED


def _dock_once(spec: SlotSpec, cfg: Config, vault: Vault, identity: DockIdentity,
               policy: bytes | None, state: SlotState,
               lock: list[DeviceLock]) -> dict[str, Any]:
    def identified(device_id: str) -> None:
        if not lock:
            lock.append(DeviceLock(cfg.state_dir, device_id))
        elif lock[0].device_id != device_id:  # another recorder now on this port
            raise SessionError(f"{device_id} came on this port while it served"
                               f" {lock[0].device_id}; it is served afresh")
        state.write(device=device_id, state="offloading", done=0, total=0)

    transport = open_transport(spec, cfg)
    try:
        session = DockSession(transport, vault, identity, enroll_unknown=cfg.enroll_unknown,
                              timeout=cfg.timeout_s)
        return dock(session, state.progress, policy_file=policy,
                    on_identified=identified).to_dict()
    finally:
        with contextlib.suppress(Exception):
            transport.close()
