"""Simulated recorder for the MicroPython unix port: `micropython -m device.main --link PTY ...`.

Boots like a recorder (key, record store, clock state), records the requested segments on the
simulated camera, then serves the dock protocol on the link until killed. Logs go to stderr,
never onto the link.
"""

import sys

import argparse

from device.clock import ClockService
from device.dock import DockServer
from device.hal import Hal
from device.keystore import DeviceKey
from device.recorder import Recorder
from device.sim_hal import SimBattery, SimCamera, SimClock, SimIndicator, SimStorage, TtyLink
from device.store import RecordStore


def log(text: str) -> None:
    sys.stderr.write("device: %s\n" % text)


def _args(argv):
    p = argparse.ArgumentParser()
    p.add_argument("--link", required=True, help="tty path of the dock link")
    p.add_argument("--storage", required=True, help="directory standing in for the card")
    p.add_argument("--device-id", default="")
    p.add_argument("--segments", type=int, default=0, help="segments to record at boot")
    p.add_argument("--segment-ms", type=int, default=1000)
    p.add_argument("--bitrate", type=int, default=8000000, help="camera bits per second")
    p.add_argument("--skew-us", type=int, default=0, help="clock offset at boot")
    p.add_argument("--drift-ppm", type=int, default=0)
    p.add_argument("--main-pct", type=int, default=95)
    p.add_argument("--main-charging", type=int, default=1)
    p.add_argument("--backup-pct", type=int, default=90)
    p.add_argument("--capacity-mb", type=int, default=32768)
    p.add_argument("--fault", default="", help="a self-test fault to report (simulation)")
    return p.parse_args(argv)


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
    storage = SimStorage(a.storage, a.capacity_mb * 1024 * 1024)
    faults = [a.fault] if a.fault else []
    hal = Hal(
        device_id=_device_id(a.storage, a.device_id),
        clock=SimClock(a.skew_us, a.drift_ppm),
        battery_main=SimBattery(4200, 3300, a.main_pct, bool(a.main_charging), 20),
        battery_backup=SimBattery(3000, 2000, a.backup_pct),
        storage=storage,
        camera=SimCamera(a.bitrate),
        indicator=SimIndicator(log),
        link=TtyLink(a.link),
        selftest=lambda: faults,
    )
    key = DeviceKey.load_or_create(a.storage, log)
    store = RecordStore(a.storage)
    clock = ClockService(hal.clock, a.storage)
    recorder = Recorder(hal, store, key, clock, log)
    log("booted %s, chain head %d" % (hal.device_id, store.head_seq))
    for _ in range(a.segments):
        recorder.record_segment(a.segment_ms)
    server = DockServer(hal, store, key, clock, log)
    log("ready for the dock")
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
