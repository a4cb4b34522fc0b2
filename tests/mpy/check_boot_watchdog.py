"""Boot recovery on a big card feeds the watchdog as it goes, inside MicroPython.

    micropython -X heapsize=96m tests/mpy/check_boot_watchdog.py [fat|lfs2] [RECORDS]

A power cut mid-recording on a card holding RECORDS (default 3000) records nobody has
offloaded yet: the newest, a segment of 16 MiB, was signed but its data is still
`current.part` (the cut came before the rename), and the recording meta says recording was
on. Booting it (device/app.py's boot, as every board does) lists the records to find the
chain head, hashes the part to finish the seal, and signs the gap.

The card is a block device in RAM with an SD card's costs in simulated time (each call
LATENCY_US plus NS_PER_BYTE per byte: 0.2 ms a command, 20 MB/s); the board's clock ticks and
the watchdog run on that time. The watchdog (timeout TIMEOUT_MS of it) records every feed:
the time and the block operations since the one before. Checks: the boot completes (the
segment's data under its name, a power_loss gap after it) and took several timeouts; the
watchdog was never starved for longer than its timeout, nor for more than MAX_OPS block
operations; it was not fed blindly (no more feeds than units of work: directory entries,
chunks, records).

One file operation cannot be split: on FAT a lookup in a directory of 3000 records reads
every directory sector, one block-device call each (~850 calls), and a create with a long
name scans it a few times over (~3000), so MAX_OPS and the timeout leave room for a few of
them. The firmware that fed the watchdog only before and after recovery starved it for ~9600
calls (~2.9 s): the listings, the lookups and the hash of the part. On littlefs with 512-byte
blocks a lookup in such a directory costs ~5000 calls, beyond this model's timeout: run
`lfs2` to see its figures.

Prints "ok <name>" per check, "FIGURES ..." and "ALL OK"; exits 1 on the first failure.
"""

import hashlib
import sys

import vfs

sys.path.append("tests/mpy")
import crash_points as cp  # noqa: E402
from cards import add_events, fake_record, ok  # noqa: E402

from device import app, fs  # noqa: E402
from device import keystore as keystore_module  # noqa: E402
from device.hal import Hal  # noqa: E402
from device.store import RecordStore  # noqa: E402

KIND = sys.argv[1] if len(sys.argv) > 1 else "fat"
RECORDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
ROOT = "/t"
BLOCKS = 81920  # a 40 MiB card
PART = 16 * 1024 * 1024  # the segment whose seal the cut interrupted
LATENCY_US = 200  # per block-device call (a command on the SD bus)
NS_PER_BYTE = 50  # 20 MB/s
TIMEOUT_MS = 1000  # the watchdog's timeout, in the card's simulated time
MAX_OPS = 4000  # block operations between two feeds at most (see above)


class SdCard(cp.RamDisk):
    """A RAM card that costs time: `us` is the simulated time its operations took."""

    def __init__(self, data):
        super().__init__(data)
        self.us = 0
        self.ops = 0

    def readblocks(self, n, buf, off=0):
        self.us += LATENCY_US + len(buf) * NS_PER_BYTE // 1000
        self.ops += 1
        super().readblocks(n, buf, off)

    def writeblocks(self, n, buf, off=None):
        self.us += LATENCY_US + len(buf) * NS_PER_BYTE // 1000
        self.ops += 1
        super().writeblocks(n, buf, off)


class CardClock:
    """The board's clock and ticks on the card's simulated time."""

    def __init__(self, card):
        self.card = card
        self.offset = cp.T_REBOOT

    def now_us(self):
        return self.offset + self.card.us

    def ticks_ms(self):
        return self.card.us // 1000

    def step(self, delta_us):
        self.offset += delta_us


class RecordingWatchdog:
    """The board's watchdog: notes each feed, the longest starvation (simulated ms) and the
    most block operations between two feeds."""

    def __init__(self, card):
        self.card = card
        self.feeds = 0
        self.worst_ms = 0
        self.worst_ops = 0
        self.start()

    def start(self):
        self.at_us = self.card.us
        self.at_ops = self.card.ops

    def feed(self):
        self.feeds += 1
        self.check()
        self.start()

    def check(self):
        self.worst_ms = max(self.worst_ms, (self.card.us - self.at_us) // 1000)
        self.worst_ops = max(self.worst_ops, self.card.ops - self.at_ops)


def make_card():
    """The card as the power cut left it; returns its block device."""
    bd = cp.fresh_card(KIND, BLOCKS)
    cp.mount(KIND, bd, ROOT)
    fs._gens.clear()
    keystore_module.DeviceKey.load_or_create(ROOT, cp.log, rng=cp.seed_rng)
    store = RecordStore(ROOT, spare=16384)
    add_events(store, RECORDS)
    digest = hashlib.sha256()
    chunk = bytearray(8192)
    with open(store.part_path, "wb") as f:
        for i in range(PART // len(chunk)):
            chunk[0] = i & 0xFF
            chunk[1] = i >> 8
            f.write(chunk)
            digest.update(chunk)
    t_start = cp.T_FIRST
    store.write_meta({"t_start": t_start, "t_alive": t_start + 50000000,
                      "clock": {"state": "unset", "synced_at": 0, "uncertainty_us": 0},
                      "phase": {}, "tracks": ["audio", "video"], "pre_event_ms": 0,
                      "active": {}})
    seq = store.head_seq + 1
    sha = digest.digest()
    raw, fields = fake_record(seq, store.head_hash, "segment", PART, sha)
    store.add(seq, None, raw, fields)  # the record; the cut came before the rename
    vfs.umount(ROOT)
    return bd, seq, sha


def boot(bd):
    card = SdCard(bd.data)
    cp.mount(KIND, card, ROOT)  # a fresh mount: nothing cached
    fs._gens.clear()
    key = keystore_module.DeviceKey.load_or_create(ROOT, cp.log, rng=cp.seed_rng)
    wdt = RecordingWatchdog(card)  # the board starts it before the core boots
    hal = Hal(device_id="SIM-WDT", clock=CardClock(card), battery_main=cp.Battery(),
              battery_backup=cp.Battery(), storage=cp.Storage(ROOT),
              camera=cp.Camera(CardClock(card)), indicator=cp.Indicator(), link=None,
              selftest=lambda: [], watchdog=wdt)
    rec = app.boot(hal, key, cp.log, root=ROOT, pre_event_s=0, spare=16384)
    wdt.check()  # from the last feed to the end of the boot
    return rec, card, wdt


def main():
    bd, seq, sha = make_card()
    rec, card, wdt = boot(bd)
    store = rec.store
    print("FIGURES fs=%s records=%d boot_ms=%d block_ops=%d feeds=%d worst_gap_ms=%d "
          "worst_gap_ops=%d timeout_ms=%d" % (KIND, RECORDS + 1, card.us // 1000, card.ops,
                                              wdt.feeds, wdt.worst_ms, wdt.worst_ops,
                                              TIMEOUT_MS))
    ok("the boot took longer than the watchdog's timeout (the case in point)",
       card.us // 1000 > 2 * TIMEOUT_MS, card.us)
    ok("the cut seal is finished: the segment's data under its name",
       fs.size(store.path(seq, ".bin")) == PART and not store.part_exists())
    gap = store.fields(store.head_seq)
    ok("a power_loss gap follows it", store.head_seq == seq + 1 and gap["kind"] == "gap"
       and gap["cause"] == "power_loss" and gap["last_seq"] == seq, gap)
    ok("the watchdog was never starved beyond its timeout (%d ms)" % wdt.worst_ms,
       wdt.worst_ms < TIMEOUT_MS, wdt.worst_ms)
    ok("nor for more than %d block operations (%d)" % (MAX_OPS, wdt.worst_ops),
       wdt.worst_ops <= MAX_OPS, wdt.worst_ops)
    units = 4 * (RECORDS + 2) + 2 * PART // 8192 + 16
    ok("fed per unit of work, not blindly (%d feeds, at most %d)" % (wdt.feeds, units),
       wdt.feeds <= units, wdt.feeds)
    vfs.umount(ROOT)
    print("ALL OK")


main()
