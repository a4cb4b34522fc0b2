"""Simulated recorder for the MicroPython unix port: `micropython -m device.main --link PTY ...`.

Boots like a recorder (key, record store, clock state), records the requested segments on the
simulated camera, then serves the dock protocol on the link until killed. Logs go to stderr,
never onto the link.
"""

import asyncio
import sys

# Imports are inside main() and run(): see the boot order in main().


def log(text: str) -> None:
    sys.stderr.write("device: %s\n" % text)


_OPTIONS = {
    # name: default (an int default makes the option an int)
    "link": "",  # tty path of the dock link
    "mqtt": "",  # host:port of an MQTT broker: dock over MQTT instead of the serial link
    "mqtt-ca": "",  # CA file (PEM or DER): TLS to the broker, its certificate verified
    "mqtt-cert": "",  # this recorder's client certificate (CN = device id) ...
    "mqtt-key": "",  # ... and its private key
    "mqtt-server-name": "",  # the name the broker's certificate must carry (default: host)
    "mqtt-user": "",  # MQTT user name (password authentication)
    "mqtt-password-file": "",  # file holding the MQTT password
    "storage": "",  # directory standing in for the card
    "device-id": "",
    "segments": 0,  # segments to record at boot
    "segment-ms": 1000,
    "bitrate": 8000000,  # camera bits per second
    "skew-us": 0,  # clock offset at boot
    "drift-ppm": 0,
    "main-pct": 95,
    "main-charging": 1,
    "backup-pct": 90,
    "capacity-mb": 32768,
    "fault": "",  # a self-test fault to report
    "unit-key": "",  # hex public key of the unit, set at commissioning (signs policies)
    "pre-event-s": -1,  # override the policy's pre-event buffer (simulation speed-up)
}


def _args(argv) -> dict:
    """`--name value` pairs over _OPTIONS (argparse costs a board more heap than it is worth)."""
    opts = dict(_OPTIONS)
    i = 0
    while i < len(argv):
        name = argv[i][2:] if argv[i].startswith("--") else ""
        if name not in opts or i + 1 >= len(argv):
            raise SystemExit("device: bad option %r; options: --%s" % (argv[i], " --".join(
                sorted(opts))))
        value = argv[i + 1]
        opts[name] = int(value) if isinstance(_OPTIONS[name], int) else value
        i += 2
    if not opts["storage"]:
        raise SystemExit("device: --storage is required")
    if not (opts["link"] or opts["mqtt"]):
        raise SystemExit("device: --link or --mqtt is required")
    return opts


def _device_id(root: str, wanted: str) -> str:
    # The serial number a board reads from its fuses; the simulation keeps one per storage.
    path = root + "/device.id"
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        pass
    if not wanted:
        import os
        from binascii import hexlify

        wanted = "SIM-" + hexlify(os.urandom(4)).decode().upper()
    with open(path, "w") as f:
        f.write(wanted)
    return wanted


def main(argv) -> None:
    a = _args(argv)
    # Boot order matters on a small heap: the link's and the camera's buffers, then the key's
    # 24 KB table, are allocated while large free blocks still exist; the rest comes after.
    from device.recorder import CHUNK_SIZE
    from device.sim_hal import makedirs

    makedirs(a["storage"])
    device_id = _device_id(a["storage"], a["device-id"])
    tty = None
    link: object
    if a["mqtt"]:
        from device.mqtt_link import MqttLink

        host, _, port = a["mqtt"].rpartition(":")
        tls = password = None
        if a["mqtt-ca"]:
            from device.mqtt import tls_context

            tls = tls_context(a["mqtt-ca"], a["mqtt-cert"], a["mqtt-key"])
        elif a["mqtt-cert"] or a["mqtt-key"]:
            raise SystemExit("device: --mqtt-cert/--mqtt-key need --mqtt-ca")
        if a["mqtt-password-file"]:
            with open(a["mqtt-password-file"]) as f:
                password = f.read().rstrip("\r\n")
        link = MqttLink(host, int(port), device_id, log,
                        user=a["mqtt-user"] or None, password=password, tls=tls,
                        server_hostname=a["mqtt-server-name"] or None)
    else:
        from device.link import FramedLink
        from device.sim_hal import open_tty

        tty = open_tty(a["link"])
        link = FramedLink(tty, log)
    camera_buf = bytearray(CHUNK_SIZE)
    from device.keystore import DeviceKey

    key = DeviceKey.load_or_create(a["storage"], log)

    asyncio.run(run(a, device_id, tty, link, camera_buf, key))


async def run(a, device_id, tty, link, camera_buf, key) -> None:
    from device.clock import ClockService
    from device.dock import DockServer
    from device.hal import Hal
    from device.policy_store import PolicyStore
    from device.recorder import Recorder
    from device.sim_hal import SimBattery, SimCamera, SimClock, SimIndicator, SimStorage, SimUI
    from device.store import RecordStore

    storage = SimStorage(a["storage"], a["capacity-mb"] * 1024 * 1024)
    faults = [a["fault"]] if a["fault"] else []
    hal = Hal(
        device_id=device_id,
        clock=SimClock(a["skew-us"], a["drift-ppm"]),
        battery_main=SimBattery(4200, 3300, a["main-pct"], bool(a["main-charging"]), 20),
        battery_backup=SimBattery(3000, 2000, a["backup-pct"]),
        storage=storage,
        camera=SimCamera(a["bitrate"]),
        indicator=SimIndicator(log),
        link=tty,
        selftest=lambda: faults,
    )
    policies = PolicyStore(a["storage"], log)
    if a["unit-key"]:
        from binascii import unhexlify

        policies.commission(unhexlify(a["unit-key"]))
    if a["pre-event-s"] >= 0:
        policies.current["thresholds"]["pre_event_s"] = a["pre-event-s"]
    store = RecordStore(a["storage"])
    clock = ClockService(hal.clock, a["storage"])
    recorder = Recorder(hal, store, key, clock, policies, log, buf=camera_buf,
                        segment_ms=a["segment-ms"])
    log("booted %s, chain head %d, policy %s" % (hal.device_id, store.head_seq, policies.name))
    recorder.recover()
    asyncio.create_task(recorder.run())
    if a["segments"] > 0:
        await recorder.record_segments(a["segments"])
    asyncio.create_task(_ui(SimUI(), recorder))
    server = DockServer(link, hal, store, key, clock, log, policies=policies, recorder=recorder)
    log("ready for the dock")
    await server.serve()


async def _ui(ui, recorder) -> None:
    """Buttons and menu (simulated: lines on stdin) drive the recorder."""
    from device.recorder import Refused

    while True:
        action, args = await ui.next_action()
        if not action:
            continue
        try:
            log("ui: %s -> %s" % (action, recorder.handle(action, args)))
        except Refused as exc:
            log("ui: %s" % exc)


if __name__ == "__main__":
    main(sys.argv[1:])
