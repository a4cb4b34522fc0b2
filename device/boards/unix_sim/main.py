"""The unix-port board's entry point: `micropython -m device.boards.unix_sim.main --link PTY …`.

Reads its options from the command line (a real board reads a config file), builds the
simulated hardware (device/boards/unix_sim/hal.py) and the dock link (a pty, or MQTT), and
hands them to device/app.py, which boots the recorder the same way on every board. Logs go to
stderr, never onto the link.

The card is a host directory (`--storage DIR`) or, as on a board, a file system on a block
device: `--card-image FILE --card-fs lfs2|fat` mounts littlefs or FAT from an image file at
/card (made and formatted first if it does not exist, `--card-kb` in size), and the storage
usage comes from that file system. `--watchdog-fd N` feeds the simulator's watchdog through a
pipe; `--reset-cause watchdog` is how the simulator tells the firmware why it was reset.
The clock is an RTC with a good backup cell: `--skew-us` sets it at the first boot, and its
setting (a dock's steps included) is kept in `rtc` on the storage across restarts;
`--rtc-lost 1` is a boot after that cell went flat, the RTC starting at `--skew-us` again.
"""

import asyncio
import sys

from device import fs

# Imports are inside main(): see the boot order in device/app.py.


_probe = None  # the heap probe (--heap-probe 1): sampled at each log line and dock answer


def log(text: str) -> None:
    if _probe is not None:
        _probe(text)
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
    "card-image": "",  # ... or an image file of a card's file system, mounted at /card
    "card-fs": "lfs2",  # its file system: lfs2 (littlefs v2) or fat
    "card-kb": 0,  # size of an image made at first boot
    "card-block": 512,  # its block size
    "watchdog-fd": -1,  # pipe to the simulator's watchdog (fed while the recorder is healthy)
    "reset-cause": "",  # why the board was reset, if it knows ("watchdog")
    "device-id": "",
    "segments": 0,  # segments to record at boot
    "segment-ms": 1000,
    "bitrate": 8000000,  # camera bits per second
    "skew-us": 0,  # clock offset at the first boot (the RTC keeps its setting after that)
    "rtc-lost": 0,  # 1: the RTC's backup cell went flat while off: it starts at skew-us again
    "drift-ppm": 0,
    "main-pct": 95,
    "main-charging": 1,
    "backup-pct": 90,
    "capacity-mb": 32768,
    "fault": "",  # a self-test fault to report
    # hex public key of the unit (signs policies), set once; absent: the one commissioned on
    # the storage (unit.pub: `bodycam device commission`, read by device/policy_store.py)
    "unit-key": "",
    "pre-event-s": -1,  # override the policy's pre-event buffer (simulation speed-up)
    "main-drain": 20,  # main battery: percent per (simulated) hour while not charging
    "main-charge": 0,  # ... and gained per (simulated) hour while charging (0: it holds)
    "sim-rate": 1,  # simulated time runs this many times fast (clock, camera, batteries)
    "heap-probe": 0,  # 1: log the heap's figures (hal.HeapProbe; tools/shift.py)
    "gc-every": -1,  # bytes allocated between collections (-1: device/app.py's; 0: none)
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
    if not (opts["storage"] or opts["card-image"]):
        raise SystemExit("device: --storage or --card-image is required")
    if not (opts["link"] or opts["mqtt"]):
        raise SystemExit("device: --link or --mqtt is required")
    return opts


def _device_id(root: str, wanted: str) -> str:
    # The serial number a board reads from its fuses; the simulation keeps one per storage.
    path = root + "/device.id"
    try:
        known = fs.read(path).decode().strip()
        if known:  # empty: a cut while it was written at the first boot
            return known
    except OSError:
        pass
    if not wanted:
        import os
        from binascii import hexlify

        wanted = "SIM-" + hexlify(os.urandom(4)).decode().upper()
    fs.write_once(path, wanted.encode())
    return wanted


def _link(a, device_id):
    """The dock link the options ask for: (the tty or None, the link)."""
    if not a["mqtt"]:
        from device.boards.unix_sim.hal import open_tty
        from device.link import FramedLink

        tty = open_tty(a["link"])
        return tty, FramedLink(tty, log)
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
    return None, MqttLink(host, int(port), device_id, log, user=a["mqtt-user"] or None,
                          password=password, tls=tls,
                          server_hostname=a["mqtt-server-name"] or None)


def _probe_answers(link) -> None:
    """Sample the heap before each answer goes to the dock (the answer and what it was made
    from are alive then)."""
    send = link.send

    async def probed(payload) -> None:
        _probe(payload)  # type: ignore[misc]
        await send(payload)

    link.send = probed


def main(argv) -> None:
    global _probe
    a = _args(argv)
    if a["heap-probe"]:
        from device.boards.unix_sim.hal import HeapProbe

        _probe = HeapProbe(log)
    from device import app

    if a["card-image"]:
        from device.boards.unix_sim.hal import mount_card

        root = "/card"
        mount_card(a["card-image"], a["card-fs"], root, a["card-kb"], a["card-block"])
    else:
        root = a["storage"]
        fs.makedirs(root)
    device_id = _device_id(root, a["device-id"])
    tty, link = _link(a, device_id)
    camera_buf = app.camera_buffer()
    key = app.load_key(root, log)

    from binascii import unhexlify

    from device.boards.unix_sim.hal import (
        SimBattery,
        SimCamera,
        SimClock,
        SimIndicator,
        SimStorage,
        SimTime,
        SimUI,
        SimWatchdog,
    )
    from device.hal import Hal

    if _probe is not None:
        _probe_answers(link)
    sim = SimTime(a["sim-rate"])
    faults = [a["fault"]] if a["fault"] else []
    hal = Hal(
        device_id=device_id,
        clock=SimClock(a["skew-us"], a["drift-ppm"], sim, root + "/rtc", bool(a["rtc-lost"])),
        battery_main=SimBattery(4200, 3300, a["main-pct"], bool(a["main-charging"]),
                                a["main-drain"], sim, a["main-charge"]),
        battery_backup=SimBattery(3000, 2000, a["backup-pct"], sim=sim),
        storage=SimStorage(root, 0 if a["card-image"] else a["capacity-mb"] * 1024 * 1024),
        camera=SimCamera(a["bitrate"], sim),
        indicator=SimIndicator(log),
        link=tty,
        selftest=lambda: faults,
        watchdog=SimWatchdog(a["watchdog-fd"]) if a["watchdog-fd"] >= 0 else None,
    )
    asyncio.run(app.serve(hal, link, key, log, root=root, camera_buf=camera_buf,
                          unit_key=unhexlify(a["unit-key"]) if a["unit-key"] else b"",
                          pre_event_s=a["pre-event-s"], segments=a["segments"],
                          segment_ms=a["segment-ms"], ui=SimUI(sim, _probe),
                          reset_cause=a["reset-cause"],
                          gc_every=app.GC_EVERY if a["gc-every"] < 0 else a["gc-every"]))


if __name__ == "__main__":
    main(sys.argv[1:])
