"""The central tier's engines, started for real: Ceph RGW (S3 with Object Lock), PostgreSQL and
a pair of mosquitto brokers joined by the shipped bridge configuration.

    ceph         (session) host_agent.lab.ceph.CephRGW: endpoint_url, access_key, secret_key,
                 client() -> boto3 S3 client (path-style, us-east-1, SigV4, no retries)
    postgres     (session) host_agent.lab.postgres.Postgres: dsn (libpq string for psycopg 3),
                 create_database(name) -> dsn
    two_brokers  (function) TwoBrokers: the dock's broker as shipped
                 (host_agent/deploy/mosquitto: mosquitto.conf, acl, and bridge.conf after
                 them) bridged over TLS with a client certificate to a central broker (TLS,
                 client certificates); the bridge is up when the fixture returns;
                 client(broker, cn) connects with a certificate CN = cn
    docks        (function) two docks of one unit (tests/custody_world.World): dock A with
                 REC-1 and REC-2, dock B with REC-3, each a phase of its case CASE-<recorder>
    tier         (function) tests/central/tier.Tier: a central service for their unit

A missing engine skips its tests, except under CI (CI set, as .ci/run does), where it fails:
CI installs them.
"""

from __future__ import annotations

import os
import shutil
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from host_agent.lab import ceph as lab_ceph
from host_agent.lab import postgres as lab_postgres
from host_agent.lab.broker import (
    BrokerError,
    Mosquitto,
    deploy_file,
    mosquitto_binary,
    tls_listener_config,
)
from tests.central.tier import Tier
from tests.custody_world import World
from tests.hil.pki import TestCA

_timings: dict[str, dict[str, float]] = {}


def needs(what: str, missing: list[str], install: str) -> None:
    """Skip (fail under CI) when an engine's programs are missing."""
    if not missing:
        return
    message = f"{what} is not installed (missing {', '.join(missing)}): {install}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} -- CI installs it (.ci/run)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def ceph(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lab_ceph.CephRGW]:
    needs("Ceph (mon, osd, radosgw)", lab_ceph.missing_programs(), lab_ceph.INSTALL)
    with lab_ceph.CephRGW(tmp_path_factory.mktemp("ceph")) as store:
        _timings["Ceph RGW"] = dict(store.timings)
        yield store
        store.check()  # a daemon that died during the session is an error, not a quiet exit


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lab_postgres.Postgres]:
    needs("PostgreSQL", [] if lab_postgres.postgres_bindir() else ["initdb, pg_ctl, postgres"],
          lab_postgres.INSTALL)
    with lab_postgres.Postgres(tmp_path_factory.mktemp("postgres")) as pg:
        _timings["PostgreSQL"] = dict(pg.timings)
        yield pg


# -- two brokers and the bridge -------------------------------------------------------------
DOCK_ID = "TEST-DOCK-1"
BRIDGE_ID = f"dock-{DOCK_ID}"
BRIDGE_STATE = f"$SYS/broker/connection/{BRIDGE_ID}/state"


def bridge_config(text: str, *, address: str, etc_dir: Path, dock_id: str) -> list[str]:
    """The shipped bridge.conf made runnable against a test central broker: only the address,
    /etc/mosquitto/bodycam/ and DOCK_ID are rewritten."""
    out = []
    for line in text.splitlines():
        if line.split()[:1] == ["address"]:
            line = f"address {address}"
        out.append(line.replace("/etc/mosquitto/bodycam/", f"{etc_dir}/")
                   .replace("DOCK_ID", dock_id))
    return out


@dataclass
class TwoBrokers:
    dock: Mosquitto          # the shipped dock broker: mosquitto.conf + acl + bridge.conf
    central: Mosquitto       # TLS only, client certificates (CN = user name)
    ca: TestCA               # signed every certificate, both brokers trust it
    clients: list[mqtt.Client] = field(default_factory=list)

    def tls(self, cn: str) -> ssl.SSLContext:
        cert, key = self.ca.client(cn)
        ctx = ssl.create_default_context(cafile=str(self.ca.ca_file))
        ctx.load_cert_chain(str(cert), str(key))
        return ctx

    def client(self, broker: Mosquitto, cn: str) -> mqtt.Client:
        """A connected paho client (looping in its thread) with a certificate CN = cn: at the
        dock that is its user name for the ACL (a device id, or "dock")."""
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cn, protocol=mqtt.MQTTv311)
        c.tls_set_context(self.tls(cn))
        connected = threading.Event()
        c.on_connect = lambda cl, u, f, rc, p: None if rc.is_failure else connected.set()
        c.connect(broker.host, broker.port)
        c.loop_start()
        self.clients.append(c)
        assert connected.wait(5), f"{cn} could not connect to {broker.host}:{broker.port}"
        return c

    def close(self) -> None:
        for c in self.clients:
            c.disconnect()
            c.loop_stop()


class Inbox:
    """Messages a client receives; wait() for one that matches."""

    def __init__(self, client: mqtt.Client) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self._cond = threading.Condition()
        client.on_message = self._on_message

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def wait(self, topic: str, payload: bytes | None = None,
             timeout: float = 10.0) -> mqtt.MQTTMessage:
        def match() -> mqtt.MQTTMessage | None:
            for m in self.messages:
                if m.topic == topic and (payload is None or m.payload == payload):
                    return m
            return None

        with self._cond:
            found = self._cond.wait_for(match, timeout)
        assert found is not None, (f"no {topic} {payload!r} within {timeout}s; got "
                                   f"{[(m.topic, m.payload) for m in self.messages]}")
        return found

    def topics(self) -> list[str]:
        with self._cond:
            return [m.topic for m in self.messages]


def subscribe(client: mqtt.Client, topic: str, qos: int = 1) -> Inbox:
    inbox = Inbox(client)
    done = threading.Event()
    client.on_subscribe = lambda cl, u, mid, rcs, p: done.set()
    client.subscribe(topic, qos)
    assert done.wait(5), f"no SUBACK for {topic}"
    return inbox


@pytest.fixture
def two_brokers(tmp_path: Path) -> Iterator[TwoBrokers]:
    try:
        mosquitto_binary()
    except BrokerError as exc:
        needs("mosquitto", ["mosquitto"], str(exc).rsplit(": ", 1)[-1])
    ca = TestCA(tmp_path / "pki")
    central_cert, central_key = ca.server("central")
    # The dock's /etc/mosquitto/bodycam/: its own listener's files (mosquitto.conf) and the
    # bridge's (bridge.conf); Mosquitto.production copies the shipped acl in.
    etc = tmp_path / "dock-etc"
    etc.mkdir()
    for name in ("ca.crt", "central-ca.crt"):
        shutil.copyfile(ca.ca_file, etc / name)
    for stem, (crt, key) in (("broker", ca.server("dock-broker")),
                             ("bridge", ca.client(BRIDGE_ID))):
        crt.rename(etc / f"{stem}.crt")
        key.rename(etc / f"{stem}.key")
    central = Mosquitto(tmp_path / "central",
                        extra_config=tls_listener_config(ca.ca_file, central_cert, central_key))
    with central:
        bridge = bridge_config(deploy_file("bridge.conf"),
                               address=f"{central.host}:{central.port}", etc_dir=etc,
                               dock_id=DOCK_ID)
        pair = TwoBrokers(dock=Mosquitto.production(tmp_path / "dock", etc, extra_config=bridge),
                          central=central, ca=ca)
        try:
            # The bridge announces itself on the central broker (notifications true).
            state = subscribe(pair.client(central, "monitor"), BRIDGE_STATE)
            with pair.dock:
                try:
                    state.wait(BRIDGE_STATE, b"1")
                except AssertionError:
                    raise AssertionError(f"the bridge did not come up\n--- dock log ---\n"
                                         f"{pair.dock.log_text()}\n--- central log ---\n"
                                         f"{central.log_text()}") from None
                yield pair
        finally:
            pair.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for name, t in _timings.items():
        parts = ", ".join(f"{k} {v:.2f}" for k, v in t.items())
        terminalreporter.write_line(f"central engines: {name} from nothing, seconds: {parts}")


@pytest.fixture
def docks(tmp_path: Path) -> Iterator[tuple[World, World]]:
    """Two docks of one unit; three recorders (REC-1 and REC-2 at dock A, REC-3 at B)."""
    a = World(tmp_path / "a", "dock-a", pki=tmp_path / "pki")
    b = World(tmp_path / "b", "dock-b", pki=tmp_path / "pki")
    for world, names in ((a, ("REC-1", "REC-2")), (b, ("REC-3",))):
        for name in names:
            world.recorder(name)
            world.phase(name, case=f"CASE-{name}")
            world.segment(name)
            world.release(name)
            world.docking(name)
        world.checkpoint()
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def tier(ceph: Any, postgres: Any, docks: tuple[World, World]) -> Iterator[Tier]:
    t = Tier(ceph, postgres, docks[0].unit.public)
    yield t
    t.close()
