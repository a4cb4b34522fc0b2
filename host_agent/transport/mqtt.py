"""MQTT transport over paho-mqtt 2.x: one protocol payload per message, per-device topics.

The dock publishes requests to `bodycam/<id>/h2d` (QoS 1) and subscribes to
`bodycam/<id>/d2h`; see device/mqtt_link.py for the device side and why its answers and data
go at QoS 0. paho's network loop runs in its own thread (loop_start) and puts each received
payload into a bounded queue that `receive` takes from; paho reconnects by itself, and the
subscription is renewed on every connect. A broker that stays away longer than
`reconnect_wait` seconds, or refuses us, becomes `Disconnected` at this boundary.

Production brokers (host_agent/deploy/mosquitto/) take TLS only: pass
`tls=tls_context(ca, cert, key)` (the broker verified against the CA file, host name
included; our client certificate, CN `dock`, as the user name) or `ca=`/`cert=`/`key=` file
paths directly, and/or `username`/`password`. A TLS handshake the broker rejects is a
`Disconnected` like a refusal.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from host_agent.transport import Disconnected

log = logging.getLogger("bodycam.mqtt")

TOPIC_ROOT = "bodycam"
QUEUE_MAX = 1024  # payloads: 32 MiB of 32 KiB chunks, far beyond the session's read-ahead
_PUT_WAIT = 2.0  # seconds the network thread waits on a full queue before dropping a payload


def topics(device_id: str) -> tuple[str, str, str]:
    """(h2d, d2h, status) topics of a device."""
    if not device_id or any(c in device_id for c in "+#/"):
        raise ValueError(f"device id {device_id!r} cannot name an MQTT topic")
    base = f"{TOPIC_ROOT}/{device_id}"
    return f"{base}/h2d", f"{base}/d2h", f"{base}/status"


def tls_context(ca: str | Path, cert: str | Path | None = None,
                key: str | Path | None = None) -> ssl.SSLContext:
    """A client context that verifies the broker against `ca` and presents cert+key if given."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None or key is not None:
        if cert is None or key is None:
            raise ValueError("a client certificate needs both --mqtt-cert and --mqtt-key")
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def read_password(path: str | Path) -> str:
    """The password in a file (one line; the trailing newline is not part of it)."""
    return Path(path).read_text().rstrip("\r\n")


class MqttTransport:
    def __init__(
        self,
        host: str,
        port: int,
        device_id: str,
        *,
        tls: ssl.SSLContext | None = None,
        ca: str | Path | None = None,
        cert: str | Path | None = None,
        key: str | Path | None = None,
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
        keepalive: int = 30,
        connect_timeout: float = 10.0,
        reconnect_wait: float = 15.0,
        publish_timeout: float = 5.0,
    ) -> None:
        self.name = f"mqtt:{host}:{port}/{device_id}"
        self.host = host
        self.port = port
        self.device_id = device_id
        self.topic_h2d, self.topic_d2h, self.topic_status = topics(device_id)
        self.keepalive = keepalive
        self.connect_timeout = connect_timeout
        self.reconnect_wait = reconnect_wait
        self.publish_timeout = publish_timeout
        self.device_status: str | None = None  # last retained status: "online" / "offline"
        self.dropped = 0  # payloads dropped on a full queue (the session re-requests them)
        self.connects = 0
        self._queue: queue.Queue[bytes] = queue.Queue(maxsize=QUEUE_MAX)
        self.bytes_in = 0  # payload bytes received from the device
        self._connected = threading.Event()  # connected and subscribed
        self._answered = threading.Event()  # the broker accepted or refused us
        self._refused: str | None = None
        self._closing = False
        self._sub_mid: int | None = None
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"bodycam-dock-{uuid.uuid4().hex[:12]}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        if tls is None and ca is not None:
            tls = tls_context(ca, cert, key)
        elif cert is not None or key is not None:
            raise ValueError("a client certificate (cert, key) needs ca= too, or a tls context")
        self.tls = tls is not None
        if tls is not None:
            client.tls_set_context(tls)
        if username is not None:
            client.username_pw_set(username, password)
        client.reconnect_delay_set(min_delay=1, max_delay=4)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.enable_logger(logging.getLogger("bodycam.mqtt.paho"))
        self._client = client

    # -- Transport --------------------------------------------------------------------------
    def open(self) -> None:
        try:
            self._client.connect(self.host, self.port, keepalive=self.keepalive)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise Disconnected(f"{self.name}: cannot connect: {exc}") from exc
        self._client.loop_start()
        self._answered.wait(self.connect_timeout)
        if not self._connected.is_set():
            reason = self._refused or f"no CONNACK within {self.connect_timeout}s"
            self.close()
            raise Disconnected(f"{self.name}: {reason}")

    def close(self) -> None:
        self._closing = True
        try:
            self._client.disconnect()
        except OSError:
            pass  # the socket is already gone; stopping the loop is all that is left
        self._client.loop_stop()
        self._connected.clear()

    def send(self, payload: bytes) -> None:
        """Publish a request at QoS 1 and wait for the broker's PUBACK.

        While paho reconnects this waits up to `reconnect_wait`; a request lost in a broker
        restart after that is re-sent by the session's resume logic, not here.
        """
        if not self._connected.wait(self.reconnect_wait):
            raise Disconnected(f"{self.name}: broker unreachable for {self.reconnect_wait}s"
                               + (f" ({self._refused})" if self._refused else ""))
        info = self._client.publish(self.topic_h2d, payload, qos=1)
        if info.rc == mqtt.MQTT_ERR_NO_CONN:
            log.warning("%s: publish while reconnecting; the session will ask again", self.name)
            return
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise Disconnected(f"{self.name}: publish failed: {mqtt.error_string(info.rc)}")
        try:
            info.wait_for_publish(self.publish_timeout)
        except (RuntimeError, ValueError) as exc:
            raise Disconnected(f"{self.name}: publish failed: {exc}") from exc
        if not info.is_published():
            log.warning("%s: no PUBACK within %ss", self.name, self.publish_timeout)

    def receive(self, timeout: float) -> bytes | None:
        try:
            return self._queue.get(timeout=max(0.0, timeout)) if timeout > 0 else \
                self._queue.get_nowait()
        except queue.Empty:
            return None

    # -- paho callbacks (network thread) ----------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any,
                    reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self._refused = f"broker refused the connection: {reason_code}"
            log.error("%s: %s", self.name, self._refused)
            self._answered.set()
            return
        self._refused = None
        self.connects += 1
        # Requests go out only once the answers can come back: see _on_subscribe.
        _, self._sub_mid = client.subscribe([(self.topic_d2h, 0), (self.topic_status, 1)])
        log.info("%s: connected (connection %d)", self.name, self.connects)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int,
                      reason_codes: list[Any], properties: Any) -> None:
        if mid != self._sub_mid:
            return
        refused = [str(rc) for rc in reason_codes if rc.is_failure]
        if refused:
            self._refused = f"broker refused the subscription: {', '.join(refused)}"
            log.error("%s: %s", self.name, self._refused)
        else:
            self._connected.set()
        self._answered.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any,
                       reason_code: Any, properties: Any) -> None:
        self._connected.clear()
        if not self._closing:
            log.warning("%s: disconnected (%s); paho reconnects", self.name, reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == self.topic_status:
            self.device_status = msg.payload.decode(errors="replace")
            log.info("%s: device is %s", self.name, self.device_status)
            return
        self.bytes_in += len(msg.payload)
        try:
            self._queue.put(bytes(msg.payload), timeout=_PUT_WAIT)
        except queue.Full:
            self.dropped += 1
            log.warning("%s: receive queue full, dropped a payload", self.name)

