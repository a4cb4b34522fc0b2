"""The dock's side of the central tier, as the daemon runs it: the vault forwarded to the
central (host_agent/central/forward.py) once now and again every `interval_s`, in a worker
process of its own, its progress and backlog in state_dir/forward.json for `bodycam status`."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from host_agent.central.forward import Forwarder, ForwardError, Progress
from host_agent.central.http import client_context
from host_agent.dockd.config import Config, MqttConfig
from host_agent.keys import DockIdentity
from host_agent.vault import Vault, VaultError


def forward_once(cfg: Config, progress: Any = None) -> Progress:
    if not cfg.central_url:
        raise ForwardError(f"{cfg.path} names no [central] to forward to")
    identity = DockIdentity.load(Path(cfg.identity))
    with Vault.open(cfg.vault, create=False) as vault:
        return Forwarder(vault, identity, cfg.central_url,
                         tls=client_context(cfg.central_ca)).run(progress)


def state_file(cfg: Config) -> Path:
    return Path(cfg.state_dir) / "forward.json"


def write_state(cfg: Config, **fields: Any) -> None:
    path = state_file(cfg)
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = {}
    old.update(fields, updated=time.time())
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(old, sort_keys=True))
    os.replace(tmp, path)


def run(cfg: Config) -> int:
    """One forwarding pass, its outcome in forward.json; the exit status (0: all forwarded)."""
    write_state(cfg, state="forwarding", error="")

    def progress(done: int, total: int) -> None:
        write_state(cfg, next=done, size=total, backlog=max(0, total - done))

    try:
        done = forward_once(cfg, progress)
    except (ForwardError, VaultError, OSError) as exc:
        write_state(cfg, state="error", error=str(exc))
        _tell(cfg)
        return 1
    write_state(cfg, state="forwarded", **done.to_dict(), last=time.time())
    _tell(cfg)
    return 0


def _tell(cfg: Config) -> None:
    if cfg.mqtt is None:
        return
    try:
        publish(cfg.mqtt, json.loads(state_file(cfg).read_text()))
    except (OSError, ValueError) as exc:  # telemetry is best effort; the state file stays
        write_state(cfg, telemetry_error=str(exc))


TELEMETRY_TOPIC = "bodycam/dock/forward"  # the bridge carries it to the central broker


def publish(mqtt_cfg: MqttConfig, doc: dict[str, Any], client_id: str = "dock") -> None:
    """The dock's forwarding state, retained on its own broker, whose bridge
    (host_agent/deploy/mosquitto/bridge.conf) carries it to the central broker as
    bodycam/docks/<dock>/dock/forward: the fleet's backlog, watched in one place."""
    import paho.mqtt.client as mqtt

    from host_agent.transport.mqtt import read_password, tls_context

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv311)
    if mqtt_cfg.ca:
        client.tls_set_context(tls_context(mqtt_cfg.ca, mqtt_cfg.cert or None,
                                           mqtt_cfg.key or None))
    if mqtt_cfg.user:
        client.username_pw_set(mqtt_cfg.user, read_password(mqtt_cfg.password_file)
                               if mqtt_cfg.password_file else None)
    connected = threading.Event()
    client.on_connect = lambda c, u, f, rc, p=None: None if rc.is_failure else connected.set()
    client.connect(mqtt_cfg.host, mqtt_cfg.port, keepalive=10)
    client.loop_start()
    try:
        if not connected.wait(10):
            raise OSError(f"the broker {mqtt_cfg.host}:{mqtt_cfg.port} did not accept the dock")
        info = client.publish(TELEMETRY_TOPIC, json.dumps(doc, sort_keys=True), qos=1,
                              retain=True)
        info.wait_for_publish(10)
        if not info.is_published():
            raise OSError(f"the broker {mqtt_cfg.host}:{mqtt_cfg.port} did not take the"
                          " telemetry")
    finally:
        client.disconnect()
        client.loop_stop()
