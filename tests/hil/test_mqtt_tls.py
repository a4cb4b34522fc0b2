"""The production broker setup (host_agent/deploy/mosquitto/) end to end: TLS, client
certificates, ACL.

mosquitto runs host_agent/deploy/mosquitto/mosquitto.conf itself (Mosquitto.production:
only the port, the /etc directory, the log and the user are rewritten) with a throwaway PKI
made in tmp_path (tests/hil/pki.py). The recorder is the MicroPython firmware with
--mqtt-ca/--mqtt-cert/--mqtt-key; the dock is paho with the `dock` certificate. Skipped
without mosquitto.
"""

from __future__ import annotations

import re
import shutil
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from host_agent.dock.session import DockSession, dock
from host_agent.lab.broker import (
    BrokerError,
    Mosquitto,
    deploy_file,
    mosquitto_binary,
    tls_listener_config,
)
from host_agent.lab.simulator import SimConfig, SimulatedRecorder
from host_agent.transport import Disconnected
from host_agent.transport.mqtt import MqttTransport, tls_context
from host_agent.vault import Vault
from tests.hil.conftest import device_records, lab
from tests.hil.pki import TestCA
from tests.hil.test_mqtt import BIG, FAST, check_vault_exactly, collect, paho_client, subscribe

try:
    mosquitto_binary()
except BrokerError as exc:
    pytest.skip(str(exc), allow_module_level=True)


@pytest.fixture
def pki(tmp_path: Path) -> TestCA:
    ca = TestCA(tmp_path / "etc")  # the /etc/mosquitto/bodycam/ of the production config
    ca.server("broker")
    ca.client("dock")
    return ca


def recorder_config(pki: TestCA, broker: Mosquitto, device_id: str, cert_cn: str | None = None,
                    ca: TestCA | None = None, **config: Any) -> SimConfig:
    """A recorder docking over TLS; its certificate is `cert_cn`'s from `ca` (default: its own
    from the test CA; cert_cn="" means no client certificate)."""
    issuer = ca or pki
    cn = device_id if cert_cn is None else cert_cn
    cert, key = issuer.client(cn) if cn else (Path(""), Path(""))
    return SimConfig(**{**FAST, **config, "device_id": device_id,
                        "mqtt": f"{broker.host}:{broker.port}", "mqtt_ca": str(pki.ca_file),
                        "mqtt_cert": str(cert) if cn else "",
                        "mqtt_key": str(key) if cn else ""})


def dock_over(pki: TestCA, broker: Mosquitto, device_id: str, **kw: Any) -> MqttTransport:
    return MqttTransport(broker.host, broker.port, device_id, ca=pki.ca_file,
                         cert=pki.dir / "dock.crt", key=pki.dir / "dock.key", **kw)


def run_dock(tmp_path: Path, name: str, cfg: SimConfig,
             transport: MqttTransport) -> tuple[Any, list[Any], str]:
    unit, identity = lab(tmp_path / name)
    cfg.unit_key = unit.public.hex()
    vault = Vault.open(tmp_path / name / "vault")
    rec = SimulatedRecorder(tmp_path / name / "rec", cfg, tmp_path / name / "rec.log").start()
    try:
        transport.open()
        try:
            report = dock(DockSession(transport, vault, identity, enroll_unknown=True,
                                      timeout=3.0))
            left = device_records(rec)
        finally:
            transport.close()
    except BaseException:
        print("--- device log ---\n" + rec.log_text())
        raise
    finally:
        rec.stop()
        vault.close()
    return report, left, rec.log_text()


def connected_log_ms(log: str) -> list[int]:
    return [int(ms) for ms in re.findall(r"over TLS in (\d+) ms", log)]


# -- 1. a recorder docks over TLS into the vault; the same offload in plain TCP for the rate ----
def test_a_recorder_docks_over_tls_with_its_certificate_and_the_rate_vs_plain(
        tmp_path: Path, pki: TestCA) -> None:
    with Mosquitto.production(tmp_path / "broker", pki.dir) as broker:
        cfg = recorder_config(pki, broker, "CAM-TLS-1", **BIG)
        report, left, log = run_dock(tmp_path, "tls", cfg, dock_over(pki, broker, "CAM-TLS-1"))
        assert "CAM-TLS-1" in broker.log_text()  # the certificate's CN was the user name
    check_vault_exactly(tmp_path / "tls", report, [1, 2, 3])
    assert left == []
    handshakes = connected_log_ms(log)
    assert handshakes, log

    with Mosquitto(tmp_path / "plain-broker") as plain:
        cfg = SimConfig(**{**FAST, **BIG, "device_id": "CAM-PLAIN-1",
                           "mqtt": f"{plain.host}:{plain.port}"})
        plain_report, _, _ = run_dock(tmp_path, "plain", cfg,
                                      MqttTransport(plain.host, plain.port, "CAM-PLAIN-1"))
    check_vault_exactly(tmp_path / "plain", plain_report, [1, 2, 3])

    def rate(r: Any) -> float:
        return float(r.offload["bytes"]) / r.offload["seconds"] / 1e6

    print(f"\nMicroPython TLS connect (TCP + handshake + CONNACK): {handshakes} ms; "
          f"offload {report.offload['bytes'] / 1e6:.1f} MB over TLS {rate(report):.1f} MB/s, "
          f"plain {rate(plain_report):.1f} MB/s")


# -- 2. password authentication over TLS (the README's alternative) -----------------------------
def test_a_recorder_docks_over_tls_with_a_user_name_and_password(
        tmp_path: Path, pki: TestCA) -> None:
    passwd = shutil.which("mosquitto_passwd")
    if passwd is None:
        pytest.skip("mosquitto_passwd is missing: apt-get install mosquitto")
    pw_file = pki.dir / "passwd"
    for i, (user, pw) in enumerate({"dock": "dock-pw", "CAM-PW-1": "cam-pw"}.items()):
        subprocess.run([passwd, "-b", *(["-c"] if i == 0 else []), str(pw_file), user, pw],
                       check=True, capture_output=True)
    (tmp_path / "cam.pw").write_text("cam-pw\n")
    (pki.dir / "acl").write_text(deploy_file("acl"))
    extra = tls_listener_config(pki.ca_file, pki.dir / "broker.crt", pki.dir / "broker.key",
                                require_certificate=False, use_identity_as_username=False,
                                password_file=pw_file, acl_file=pki.dir / "acl")
    with Mosquitto(tmp_path / "broker", extra_config=extra) as broker:
        cfg = SimConfig(**{**FAST, "device_id": "CAM-PW-1",
                           "mqtt": f"{broker.host}:{broker.port}", "mqtt_ca": str(pki.ca_file),
                           "mqtt_user": "CAM-PW-1",
                           "mqtt_password_file": str(tmp_path / "cam.pw")})
        transport = MqttTransport(broker.host, broker.port, "CAM-PW-1", ca=pki.ca_file,
                                  username="dock", password="dock-pw")
        report, left, _ = run_dock(tmp_path, "pw", cfg, transport)
        with pytest.raises(Disconnected, match="refused"):  # right TLS, wrong password
            MqttTransport(broker.host, broker.port, "CAM-PW-1", ca=pki.ca_file,
                          username="dock", password="wrong", connect_timeout=3).open()
    check_vault_exactly(tmp_path / "pw", report, [1, 2])
    assert left == []


# -- 3. who is refused ---------------------------------------------------------------------------
def test_certificates_from_another_ca_and_clients_without_one_are_refused(
        tmp_path: Path, pki: TestCA) -> None:
    rogue = TestCA(tmp_path / "rogue", name="rogue CA")
    with Mosquitto.production(tmp_path / "broker", pki.dir) as broker:
        recorders = [
            # A recorder whose certificate another CA signed (it trusts the right CA).
            SimulatedRecorder(tmp_path / "r1", recorder_config(
                pki, broker, "CAM-ROGUE", ca=rogue, segments=0), tmp_path / "r1.log"),
            # A recorder with no client certificate at all.
            SimulatedRecorder(tmp_path / "r2", recorder_config(
                pki, broker, "CAM-NOCERT", cert_cn="", segments=0), tmp_path / "r2.log"),
            # A recorder whose own CA file is another CA: it must not trust our broker.
            SimulatedRecorder(tmp_path / "r3", SimConfig(
                segments=0, device_id="CAM-TRUSTS-ROGUE", mqtt=f"{broker.host}:{broker.port}",
                mqtt_ca=str(rogue.ca_file), mqtt_cert=str(pki.client("CAM-TRUSTS-ROGUE")[0]),
                mqtt_key=str(pki.dir / "CAM-TRUSTS-ROGUE.key")), tmp_path / "r3.log"),
        ]
        try:
            for rec in recorders:
                rec.start()
            # Dock side: no certificate, or one from the rogue CA.
            rogue_cert, rogue_key = rogue.client("dock")
            for kw in ({}, {"cert": rogue_cert, "key": rogue_key}):
                with pytest.raises(Disconnected):
                    MqttTransport(broker.host, broker.port, "CAM-ROGUE", ca=pki.ca_file,
                                  connect_timeout=3, **kw).open()
            # Plain MQTT on the TLS port gets nowhere either.
            with pytest.raises(Disconnected):
                MqttTransport(broker.host, broker.port, "CAM-ROGUE", connect_timeout=2).open()
            for rec in recorders:  # each has tried at least twice by now (backoff 100, 200 ms)
                deadline = time.monotonic() + 10
                while rec.log_text().count("cannot connect") < 2:
                    assert time.monotonic() < deadline, rec.log_text()
                    time.sleep(0.05)
            logs = [rec.log_text() for rec in recorders]
        finally:
            for rec in recorders:
                rec.stop()
    for log in logs:
        assert "mqtt: connected" not in log, log
    # The recorder that trusts only the rogue CA refused the broker's certificate itself.
    assert "cannot connect" in logs[2]


# -- 4. device A's certificate cannot touch device B's topics ------------------------------------
def test_a_device_certificate_confines_it_to_its_own_topics(tmp_path: Path, pki: TestCA) -> None:
    for cn in ("CAM-A", "CAM-B"):
        pki.client(cn)

    def ctx(cn: str) -> ssl.SSLContext:
        return tls_context(pki.ca_file, pki.dir / f"{cn}.crt", pki.dir / f"{cn}.key")

    with Mosquitto.production(tmp_path / "broker", pki.dir) as broker:
        a = paho_client(broker, "bodycam-CAM-A", tls=ctx("CAM-A"))
        b = paho_client(broker, "bodycam-CAM-B", tls=ctx("CAM-B"))
        dock_b = dock_over(pki, broker, "CAM-B")
        dock_b.open()
        # A recorder (MicroPython) that claims to be CAM-B but holds CAM-A's certificate.
        impostor = SimulatedRecorder(tmp_path / "imp", recorder_config(
            pki, broker, "CAM-B", cert_cn="CAM-A", segments=0), tmp_path / "imp.log").start()
        try:
            got_a, got_b = collect(a), collect(b)
            assert subscribe(b, "bodycam/CAM-B/h2d", 1)[0].value == 1  # its own: granted
            codes = subscribe(a, "bodycam/CAM-B/d2h")  # B's answers: refused or never delivered
            a.subscribe("bodycam/+/d2h")
            a.subscribe("bodycam/CAM-B/h2d")  # B's requests
            a.publish("bodycam/CAM-B/h2d", b"forged by A", qos=1).wait_for_publish(5)
            a.publish("bodycam/CAM-B/d2h", b"forged answer by A", qos=1).wait_for_publish(5)
            b.publish("bodycam/CAM-B/d2h", b"from B", qos=1).wait_for_publish(5)
            dock_b.send(b"from the dock")
            assert dock_b.receive(5) == b"from B"  # not A's forgery, nor the impostor's
            deadline = time.monotonic() + 5
            while ("bodycam/CAM-B/h2d", b"from the dock") not in got_b:
                assert time.monotonic() < deadline, got_b
                time.sleep(0.02)
            time.sleep(0.3)  # time for anything forbidden to (wrongly) arrive
            assert dock_b.receive(0.1) is None
            assert got_b == [("bodycam/CAM-B/h2d", b"from the dock")]
            assert got_a == []
            assert codes[0].is_failure or got_a == []
            assert dock_b.device_status != "online"  # the impostor could not say "online"
            imp_log = impostor.log_text()
        finally:
            impostor.stop()
            dock_b.close()
            for c in (a, b):
                c.loop_stop()
                c.disconnect()
    # The impostor's certificate is valid, so it connected; but under the user name CAM-A the
    # broker delivered it none of B's requests and dropped its "online" and any answer on B's
    # topics (mosquitto 2.0 grants such a subscription and then delivers nothing on it).
    assert "over TLS" in imp_log, imp_log


# -- 5. one recorder cannot knock another off the broker -----------------------------------------
def test_a_recorder_cannot_take_over_another_recorders_session(tmp_path: Path,
                                                               pki: TestCA) -> None:
    """CAM-A connects with CAM-B's client id. Under the shipped configuration the broker names
    every client after its certificate, so CAM-B stays connected; a listener without
    `use_username_as_clientid` lets CAM-A knock CAM-B off (the control)."""
    for cn in ("CAM-A", "CAM-B"):
        pki.client(cn)

    def ctx(cn: str) -> ssl.SSLContext:
        return tls_context(pki.ca_file, pki.dir / f"{cn}.crt", pki.dir / f"{cn}.key")

    def drops_of_b(broker: Mosquitto) -> int:
        b = paho_client(broker, "bodycam-CAM-B", tls=ctx("CAM-B"))
        drops: list[int] = []
        b.on_disconnect = lambda *args: drops.append(1)
        a = paho_client(broker, "bodycam-CAM-B", tls=ctx("CAM-A"))  # A claims B's client id
        time.sleep(1.0)
        dropped = len(drops)  # before our own disconnects below
        a.loop_stop()
        b.loop_stop()
        a.disconnect()
        b.disconnect()
        return dropped

    with Mosquitto.production(tmp_path / "broker", pki.dir) as broker:
        assert drops_of_b(broker) == 0
        assert "CAM-A" in broker.log_text()  # A was named after its certificate
    weak = tls_listener_config(pki.ca_file, pki.dir / "broker.crt", pki.dir / "broker.key",
                               acl_file=None)
    with Mosquitto(tmp_path / "weak", extra_config=weak) as broker:
        assert drops_of_b(broker) >= 1
