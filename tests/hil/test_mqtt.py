"""Offload over MQTT against a real mosquitto: the recorder in MicroPython, the dock over paho.

Every test starts its own broker on a free loopback port (host_agent/lab/broker.py); they are
skipped only when the mosquitto binary is absent (`apt-get install mosquitto`).
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from host_agent.dock.session import DockReport, DockSession, dock
from host_agent.lab.broker import (
    BrokerError,
    Mosquitto,
    deploy_file,
    free_port,
    mosquitto_binary,
)
from host_agent.lab.simulator import SimConfig, SimulatedRecorder
from host_agent.transport import Disconnected
from host_agent.transport.mqtt import MqttTransport
from host_agent.vault import Vault
from tests.hil.conftest import device_records, lab

try:
    mosquitto_binary()
except BrokerError as exc:
    pytest.skip(str(exc), allow_module_level=True)

FAST = dict(segments=2, segment_ms=200, bitrate=8_000_000)
# Three 4 MB segments: long enough to interrupt mid-transfer.
BIG = dict(segments=3, segment_ms=500, bitrate=64_000_000)


@contextmanager
def docked_mqtt(tmp_path: Path, broker_at: str, device_id: str, broker: Mosquitto,
                **config: Any) -> Iterator[tuple[SimulatedRecorder, DockSession, MqttTransport]]:
    """A recorder docking over MQTT via `broker_at` (the broker, or a proxy in front of it)."""
    unit, identity = lab(tmp_path)
    cfg = SimConfig(**{**FAST, "unit_key": unit.public.hex(), **config, "mqtt": broker_at,
                       "device_id": device_id})
    vault = Vault.open(tmp_path / "vault")
    rec = SimulatedRecorder(tmp_path / "rec", cfg, tmp_path / "rec.log").start()
    transport = MqttTransport(broker.host, broker.port, device_id)
    try:
        transport.open()
        yield rec, DockSession(transport, vault, identity, enroll_unknown=True,
                               timeout=3.0), transport
    except BaseException:
        print("--- device log ---\n" + rec.log_text())
        print("--- broker log ---\n" + broker.log_text()[-3000:])
        raise
    finally:
        transport.close()
        rec.stop()
        vault.close()


def check_vault_exactly(tmp_path: Path, report: DockReport, segments: list[int]) -> None:
    """The docking stored and released exactly these segments and, after them, the recorder's
    signed event of the dock's clock step; each once."""
    seqs = segments + [segments[-1] + 1]
    assert report.offload["stored"] == seqs and report.offload["released"] == seqs
    assert report.offload["quarantined"] == []
    assert report.clock["event"] == seqs[-1]
    with Vault.open(tmp_path / "vault", create=False) as vault:
        assert vault.verify() == []
        assert [r["seq"] for r in vault.records(report.device_id)] == seqs
    objects = [p for p in (tmp_path / "vault" / "objects").rglob("*") if p.is_file()]
    assert len(objects) == len(segments)
    # Every byte taken once: what the session accepted is exactly what the vault holds.
    assert report.offload["bytes"] == sum(p.stat().st_size for p in objects)


class Interrupt:
    """A progress callback that breaks the link once the offload passes `fraction`.

    `cut` runs at once, in the dock's thread (so it happens mid-segment, not wherever a
    thread gets scheduled); `repair`, if given, runs in a thread after `delay` seconds.
    """

    def __init__(self, fraction: float, cut: Callable[[], object],
                 repair: Callable[[], object] | None = None, delay: float = 0.3) -> None:
        self.fraction = fraction
        self.fired_at: float | None = None
        self._cut = cut
        self._repair = repair
        self._delay = delay
        self._thread: threading.Thread | None = None

    def __call__(self, done: int, total: int) -> None:
        if self.fired_at is None and total and done / total >= self.fraction:
            self.fired_at = done / total
            self._cut()
            if self._repair is not None:
                self._thread = threading.Thread(target=self._later, daemon=True)
                self._thread.start()

    def _later(self) -> None:
        time.sleep(self._delay)
        assert self._repair is not None
        self._repair()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join(30)


# -- 1. the plain path --------------------------------------------------------------------------
def test_offload_over_mosquitto_stores_verifies_and_releases(tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "broker") as broker:
        with docked_mqtt(tmp_path, f"{broker.host}:{broker.port}", "SIM-MQTT-1", broker) as (
                rec, session, transport):
            report = dock(session)
            left = device_records(rec)
            status = transport.device_status
    check_vault_exactly(tmp_path, report, [1, 2])
    assert left == []
    assert report.readiness["ready"], report.readiness["reasons"]
    assert abs(report.clock["offset_after_us"]) < 5_000
    assert status == "online"  # the device's retained status after it connected


# -- 2. the broker restarts mid-transfer --------------------------------------------------------
def test_a_broker_restart_mid_transfer_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "broker") as broker:
        with docked_mqtt(tmp_path, f"{broker.host}:{broker.port}", "SIM-MQTT-2", broker,
                         **BIG) as (rec, session, transport):
            # Mid-segment 2: the broker dies with data in flight and comes back 0.3 s later.
            progress = Interrupt(0.45, broker.stop, broker.start)
            report = dock(session, progress)
            progress.join()
            left = device_records(rec)
            connects = transport.connects
        device_log = rec.log_text()
    assert progress.fired_at is not None, "the offload ended before the broker restart"
    assert connects >= 2  # the dock's paho client reconnected
    assert "connection 2" in device_log  # so did the device, on its own
    assert report.offload["bytes"] > 3 * 3_900_000
    check_vault_exactly(tmp_path, report, [1, 2, 3])
    assert left == []


# -- 3. the device's own connection is cut ------------------------------------------------------
class TcpProxy:
    """Forwards a loopback port to the broker; `cut()` drops every connection through it."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.accepted = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(self.target)
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._conns += [client, upstream]
                self.accepted += 1
            for a, b, up in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(a, b, up), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        state = bytearray()  # per connection and direction, for send_up
        try:
            while data := src.recv(1 << 16):
                if up:
                    self.send_up(dst, data, state)
                else:
                    dst.sendall(data)
        except OSError:
            pass  # cut: the other pump closes too
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def send_up(self, dst: socket.socket, data: bytes, pending: bytearray) -> None:
        """Forward device->broker bytes (a subclass may filter; `pending` is its buffer)."""
        dst.sendall(data)

    def cut(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self._server.close()
        self.cut()


class DroppingProxy(TcpProxy):
    """A TcpProxy that can silently drop the device's next PUBLISH packets (whole MQTT packets,
    so the stream stays well-formed: the broker sees nothing wrong, data just never arrives)."""

    def __init__(self, target: tuple[str, int]) -> None:
        super().__init__(target)
        self.to_drop = 0
        self.dropped = 0

    def drop_next(self, n: int) -> None:
        self.to_drop = n

    def send_up(self, dst: socket.socket, data: bytes, pending: bytearray) -> None:
        pending += data
        out = bytearray()
        while len(pending) >= 2:
            length, shift, i = 0, 0, 1
            while i < len(pending):
                length |= (pending[i] & 0x7F) << shift
                shift += 7
                i += 1
                if not pending[i - 1] & 0x80:
                    break
            else:
                break  # the length is not all here yet
            if len(pending) < i + length:
                break
            packet = bytes(pending[:i + length])
            del pending[:i + length]
            if packet[0] & 0xF0 == 0x30 and self.to_drop > 0:
                self.to_drop -= 1
                self.dropped += 1
                continue
            out += packet
        if out:
            dst.sendall(out)


# -- 3b. device->broker data silently lost mid-transfer: the dock resumes -------------------------
def test_device_data_silently_lost_mid_transfer_is_asked_again_exactly_once(
        tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "broker") as broker:
        proxy = DroppingProxy((broker.host, broker.port))
        try:
            with docked_mqtt(tmp_path, f"127.0.0.1:{proxy.port}", "SIM-MQTT-5", broker,
                             **BIG) as (rec, session, _transport):
                # Mid-segment 2: four data chunks (128 KiB) vanish between device and broker.
                progress = Interrupt(0.45, lambda: proxy.drop_next(4))
                report = dock(session, progress)
                left = device_records(rec)
            device_log = rec.log_text()
        finally:
            proxy.close()
    assert progress.fired_at is not None, "the transfer finished before anything was dropped"
    assert proxy.dropped == 4
    assert "connection 2" not in device_log  # nothing was cut: the loss was silent
    assert report.offload["repeats"] + report.offload["resumed_reads"] >= 1
    check_vault_exactly(tmp_path, report, [1, 2, 3])
    assert left == []


def test_a_cut_device_connection_mid_transfer_resumes_and_fires_the_last_will(
        tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "broker") as broker:
        statuses: list[str] = []
        watcher = paho_client(broker, "watcher")
        watcher.on_message = lambda c, u, m: statuses.append(m.payload.decode())
        subscribe(watcher, "bodycam/SIM-MQTT-3/status", qos=1)
        proxy = TcpProxy((broker.host, broker.port))
        try:
            with docked_mqtt(tmp_path, f"127.0.0.1:{proxy.port}", "SIM-MQTT-3", broker,
                             **BIG) as (rec, session, _transport):
                progress = Interrupt(0.45, proxy.cut)
                report = dock(session, progress)
                progress.join()
                left = device_records(rec)
                during = list(statuses)  # before the device stops (and its will fires again)
            device_log = rec.log_text()
        finally:
            proxy.close()
            watcher.loop_stop()
            watcher.disconnect()
    assert progress.fired_at is not None, "the transfer finished before the connection could be cut"
    assert proxy.accepted >= 2 and "connection 2" in device_log
    check_vault_exactly(tmp_path, report, [1, 2, 3])
    assert left == []
    # The broker published the device's last will when its connection vanished, then the
    # device said "online" again on reconnecting.
    assert during[0] == "online" and "offline" in during and during[-1] == "online", during


# -- 4. the ACL: a device may touch only its own topics -----------------------------------------
def paho_client(broker: Mosquitto, client_id: str, user: str | None = None,
                password: str | None = None, tls: ssl.SSLContext | None = None) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=mqtt.MQTTv311)
    if user is not None:
        c.username_pw_set(user, password)
    if tls is not None:
        c.tls_set_context(tls)
    connected = threading.Event()
    c.on_connect = lambda cl, u, f, rc, p: connected.set() if not rc.is_failure else None
    c.connect(broker.host, broker.port)
    c.loop_start()
    assert connected.wait(5), f"{client_id} could not connect"
    return c


def subscribe(c: mqtt.Client, topic: str, qos: int = 0) -> list[Any]:
    """Subscribe and wait for the SUBACK; returns its reason codes."""
    done = threading.Event()
    codes: list[Any] = []

    def on_subscribe(cl: Any, u: Any, mid: int, rcs: list[Any], p: Any) -> None:
        codes.extend(rcs)
        done.set()

    c.on_subscribe = on_subscribe
    c.subscribe(topic, qos)
    assert done.wait(5)
    return codes


def collect(c: mqtt.Client) -> list[tuple[str, bytes]]:
    got: list[tuple[str, bytes]] = []
    c.on_message = lambda cl, u, m: got.append((m.topic, bytes(m.payload)))
    return got


def test_the_acl_confines_each_device_to_its_own_topics(tmp_path: Path) -> None:
    passwd = shutil.which("mosquitto_passwd")
    if passwd is None:
        pytest.skip("mosquitto_passwd is missing: apt-get install mosquitto")
    work = tmp_path / "broker"
    work.mkdir()
    pw_file = work / "passwd"
    users = {"dock": "dock-secret", "CAM-A": "a-secret", "CAM-B": "b-secret"}
    for i, (user, pw) in enumerate(users.items()):
        subprocess.run([passwd, "-b", *(["-c"] if i == 0 else []), str(pw_file), user, pw],
                       check=True, capture_output=True)
    # The rules of host_agent/deploy/mosquitto/acl (only the dock's user name differs there).
    (work / "acl").write_text(deploy_file("acl"))
    with Mosquitto(work, extra_config=["allow_anonymous false", f"password_file {pw_file}",
                                       f"acl_file {work / 'acl'}"]) as broker:
        # No credentials, or wrong ones: refused.
        with pytest.raises(Disconnected, match="refused"):
            MqttTransport(broker.host, broker.port, "CAM-A", connect_timeout=3).open()
        with pytest.raises(Disconnected, match="refused"):
            MqttTransport(broker.host, broker.port, "CAM-A", username="CAM-A",
                          password="wrong", connect_timeout=3).open()
        a = paho_client(broker, "bodycam-CAM-A", "CAM-A", users["CAM-A"])
        b = paho_client(broker, "bodycam-CAM-B", "CAM-B", users["CAM-B"])
        dock_t = MqttTransport(broker.host, broker.port, "CAM-B", username="dock",
                               password=users["dock"])
        dock_t.open()
        try:
            got_a, got_b = collect(a), collect(b)
            assert subscribe(b, "bodycam/CAM-B/h2d", 1)[0].value == 1  # its own: granted
            assert subscribe(a, "bodycam/CAM-A/h2d", 1)[0].value == 1
            # A subscribes to B's answers: refused, or at least never delivered anything.
            codes = subscribe(a, "bodycam/CAM-B/d2h")
            a.subscribe("bodycam/+/d2h")
            # A publishes a forged request onto B's request topic.
            a.publish("bodycam/CAM-B/h2d", b"forged by A", qos=1).wait_for_publish(5)
            # B publishes on its own answer topic: the dock gets it, A must not.
            b.publish("bodycam/CAM-B/d2h", b"from B", qos=1).wait_for_publish(5)
            # The dock's own request to B goes through.
            dock_t.send(b"from the dock")
            assert dock_t.receive(5) == b"from B"
            deadline = time.monotonic() + 5
            while ("bodycam/CAM-B/h2d", b"from the dock") not in got_b:
                assert time.monotonic() < deadline, got_b
                time.sleep(0.02)
            time.sleep(0.3)  # time for anything forbidden to (wrongly) arrive
            assert got_b == [("bodycam/CAM-B/h2d", b"from the dock")]
            assert got_a == []
            assert codes[0].is_failure or got_a == []
            # A can still use its own topics: the dock hears what A publishes on its d2h.
            dock_a = MqttTransport(broker.host, broker.port, "CAM-A", username="dock",
                                   password=users["dock"])
            dock_a.open()
            try:
                a.publish("bodycam/CAM-A/d2h", b"from A", qos=1).wait_for_publish(5)
                assert dock_a.receive(5) == b"from A"
            finally:
                dock_a.close()
        finally:
            dock_t.close()
            for c in (a, b):
                c.loop_stop()
                c.disconnect()
