"""The ESP32-S3 board (device/boards/esp32s3/): type-checked against its own port's stubs, left
out of the unix port's smoke test but compiled, and its parts run under MicroPython.

The type check is real: the same check over a copy of the tree with one wrong call to the
port (a misspelt keyword to machine.ADC, a method NVS lacks, a function only the plain ESP32
has, a call the port deprecates) fails, naming the line. The parts run in the MicroPython unix
port with the chip's modules (machine, esp32, neopixel) replaced by fakes: the calendar of the
RTC clock, the battery curve, the card (littlefs and FAT on RAM block devices: a blank flash
partition is formatted, a card holding anything is never), the key seed in NVS, the buttons,
the encoder's stream, and a whole boot through main.py to "ready for the dock".
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.micropython_runner import run_micropython
from tests.tools import load_tool

REPO = Path(__file__).resolve().parents[2]
BOARD = REPO / "device" / "boards" / "esp32s3"


check_device = load_tool("check_device")


@pytest.fixture(scope="module")
def esp32_stubs() -> Path:
    """The ESP32-S3 port's stubs, installed by the check on demand (pip, into build/stubs/)."""
    return check_device.ensure_esp32_stubs()


def _mypy_output(proc) -> str:
    return (proc.stdout + proc.stderr).strip()


# -- which stubs check what ----------------------------------------------------------------------
def test_each_board_is_checked_against_its_own_port() -> None:
    assert check_device.boards() == ["esp32s3", "unix_sim"]
    assert check_device.boards_of("esp32") == ["esp32s3"]
    assert check_device.boards_of("unix") == ["unix_sim"]
    assert check_device.mypy_excludes("esp32") == ["device/boards/unix_sim/"]
    assert check_device.mypy_excludes("unix") == ["device/boards/esp32s3/"]


def test_a_board_without_a_port_fails_the_check(tmp_path: Path) -> None:
    (tmp_path / "device" / "boards" / "newboard").mkdir(parents=True)
    (tmp_path / "device" / "boards" / "newboard" / "__init__.py").write_text("")
    with pytest.raises(check_device.CheckError, match="newboard"):
        check_device.boards_of("unix", tmp_path)


def test_the_esp32_stubs_are_the_s3_firmware_s_in_their_own_directory(esp32_stubs: Path) -> None:
    assert esp32_stubs.parent == check_device.STUBS_DIR
    assert check_device.ESP32_STUBS_VERSION in esp32_stubs.name
    esp32_pyi = (esp32_stubs / "esp32.pyi").read_text()
    assert "ESP32_GENERIC_S3" in esp32_pyi
    assert "class NVS" in esp32_pyi and "class Partition" in esp32_pyi
    # Not in site-packages, where they would overwrite the unix port's machine.pyi.
    unix_machine = dict(check_device._dist_files(check_device.PORT_STUBS))["machine.pyi"]
    assert unix_machine.read_text() != (esp32_stubs / "machine.pyi").read_text()
    # Installed once: a second call reuses the directory.
    assert check_device.ensure_esp32_stubs() == esp32_stubs


def test_board_and_core_pass_the_esp32_type_check(esp32_stubs: Path, tmp_path: Path) -> None:
    proc = check_device.run_mypy(tmp_path, port="esp32")
    assert proc.returncode == 0, _mypy_output(proc)
    assert "Success: no issues found" in proc.stdout
    config = (tmp_path / "mypy.ini").read_text()
    assert "enable_error_code = deprecated" in config
    assert (tmp_path / "stubs" / "mypypath" / "esp32.pyi").is_file()
    assert not (tmp_path / "stubs" / "mypypath" / "termios.pyi").exists()  # unix only


def _tree_copy(dest: Path) -> Path:
    for pkg in check_device.PACKAGES:
        shutil.copytree(REPO / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


# (file, text in it, its wrong replacement, what mypy must say)
WRONG_CALLS = {
    "misspelt keyword to machine.ADC": (
        "hal.py",
        "machine.ADC(machine.Pin(pin), atten=machine.ADC.ATTN_11DB)",
        "machine.ADC(machine.Pin(pin), attn=machine.ADC.ATTN_11DB)",
        'Unexpected keyword argument "attn" for "ADC"',
    ),
    "a string where machine.ADC wants an attenuation": (
        "hal.py",
        "machine.ADC(machine.Pin(pin), atten=machine.ADC.ATTN_11DB)",
        'machine.ADC(machine.Pin(pin), atten="11dB")',
        'Argument "atten" to "ADC" has incompatible type "str"',
    ),
    "a method esp32.NVS does not have": (
        "hal.py",
        "self._nvs.get_blob(self.KEY, buf)",
        "self._nvs.get_str(self.KEY)",
        '"NVS" has no attribute "get_str"',
    ),
    "the plain ESP32's function, absent on the S3": (
        "hal.py",
        "machine.reset_cause() == machine.WDT_RESET",
        "esp32.raw_temperature() == machine.WDT_RESET",
        'Module has no attribute "raw_temperature"',
    ),
    "a call the port deprecates": (
        "hal.py",
        "total += self._adc.read_uv()",
        "total += self._adc.read()",
        "function machine.ADC.read is deprecated",
    ),
    "machine.WDT's timeout given positionally": (
        "hal.py",
        "machine.WDT(timeout=timeout_ms)",
        "machine.WDT(timeout_ms)",
        'Too many positional arguments for "WDT"',
    ),
}


@pytest.mark.parametrize("case", sorted(WRONG_CALLS))
def test_a_wrong_call_fails_the_esp32_type_check(esp32_stubs: Path, tmp_path: Path,
                                                 case: str) -> None:
    name, right, wrong, message = WRONG_CALLS[case]
    repo = _tree_copy(tmp_path / "repo")
    path = repo / "device" / "boards" / "esp32s3" / name
    text = path.read_text()
    assert text.count(right) == 1, f"{right!r} is no longer in {name}: update this test"
    path.write_text(text.replace(right, wrong))
    line = text[: text.index(right)].count("\n") + 1

    proc = check_device.run_mypy(tmp_path / "work", repo=repo, port="esp32")

    out = _mypy_output(proc)
    assert proc.returncode == 1, out
    assert f"device/boards/esp32s3/{name}:{line}: error: {message}" in out, out
    assert "Found 1 error in 1 file" in out, out


def test_the_unix_check_leaves_the_esp32_board_out(tmp_path: Path) -> None:
    """The unix stubs have no esp32 module: the board is outside the unix check, which still
    passes, and a board error does not leak into it."""
    repo = _tree_copy(tmp_path / "repo")
    hal = repo / "device" / "boards" / "esp32s3" / "hal.py"
    hal.write_text(hal.read_text().replace("atten=machine.ADC.ATTN_11DB", "attn=1"))
    proc = check_device.run_mypy(tmp_path / "work", repo=repo, port="unix")
    assert proc.returncode == 0, _mypy_output(proc)


# -- built, but not imported on the unix port --------------------------------------------------
def test_the_board_compiles_with_mpy_cross_but_stays_out_of_the_smoke_test(tmp_path: Path) -> None:
    built = check_device.compile_firmware(tmp_path)
    names = {p.relative_to(tmp_path).as_posix() for p in built}
    for module in ("__init__", "config", "hal", "main"):
        assert f"device/boards/esp32s3/{module}.mpy" in names
    smoke = check_device.smoke_modules()
    assert not [m for m in smoke if m.startswith("device.boards.esp32s3")]
    assert "device.boards.unix_sim.hal" in smoke and "device.app" in smoke


def test_the_board_uses_only_what_micropython_has() -> None:
    """No CPython-only module, no asyncio internals, no errno from CPython's table."""
    import ast

    allowed = {"asyncio", "os", "time", "json", "gc", "esp32", "machine", "vfs", "micropython",
               "neopixel", "network", "binascii", "usb.device", "usb.device.cdc"}
    for path in sorted(BOARD.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            else:
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                    assert not (node.value.id == "asyncio" and node.attr.startswith("_")), path
                continue
            for name in names:
                assert name in allowed or name.startswith("device"), f"{path.name}: {name}"


# -- the parts, under MicroPython ---------------------------------------------------------------
_FAKES = r"""
import sys

class _Module:
    pass

class FakePin:
    IN = 1
    OUT = 3
    PULL_UP = 2
    IRQ_FALLING = 2
    IRQ_RISING = 1
    levels = {}
    handlers = {}

    def __init__(self, n, mode=-1, pull=-1, value=None):
        self.n = n
        if value is not None:
            FakePin.levels[n] = value
        elif n not in FakePin.levels:
            FakePin.levels[n] = 1

    def value(self, v=None):
        if v is None:
            return FakePin.levels[self.n]
        FakePin.levels[self.n] = v

    def irq(self, handler=None, trigger=3):
        FakePin.handlers[self.n] = (handler, self)


def press(n, level=0):
    FakePin.levels[n] = level
    handler, pin = FakePin.handlers[n]
    handler(pin)


class FakeRTC:
    now = (2000, 1, 1, 5, 0, 0, 0, 0)

    def datetime(self, t=None):
        if t is None:
            return FakeRTC.now
        FakeRTC.now = tuple(t)


class FakeADC:
    ATTN_11DB = 3
    uv = {}

    def __init__(self, pin, atten=0):
        assert atten == 3
        self.n = pin.n

    def read_uv(self):
        return FakeADC.uv[self.n]


class FakeWDT:
    feeds = 0

    def __init__(self, timeout=5000):
        FakeWDT.timeout = timeout

    def feed(self):
        FakeWDT.feeds += 1


class RamDev:
    # A block device in RAM: an erased flash partition (0xFF) or a blank SD card (0x00).
    def __init__(self, blocks, size, fill):
        self.size = size
        self.data = bytearray(bytes([fill]) * (blocks * size))
        self.blocks = blocks

    def readblocks(self, n, buf, off=0):
        at = n * self.size + off
        buf[:] = self.data[at:at + len(buf)]

    def writeblocks(self, n, buf, off=None):
        at = n * self.size + (off or 0)
        self.data[at:at + len(buf)] = buf

    def ioctl(self, op, arg):
        if op == 4:
            return self.blocks
        if op == 5:
            return self.size
        if op == 6:
            at = arg * self.size
            self.data[at:at + self.size] = b"\xff" * self.size
        return 0


class FakePartition:
    TYPE_DATA = 1
    table = {}

    @staticmethod
    def find(type=0, subtype=255, label=None):
        return [FakePartition.table[label]] if label in FakePartition.table else []


class FakeNVS:
    store = {}

    def __init__(self, namespace):
        self.ns = namespace

    def get_blob(self, key, buf):
        value = FakeNVS.store.get((self.ns, key))
        if value is None:
            raise OSError(-0x1102, "ESP_ERR_NVS_NOT_FOUND")
        if isinstance(value, Exception):
            raise value
        buf[:len(value)] = value
        return len(value)

    def set_blob(self, key, value):
        FakeNVS.store[(self.ns, key)] = bytes(value)

    def commit(self):
        pass


class FakePixel:
    shown = []

    def __init__(self, pin, n):
        self.px = [None] * n

    def __setitem__(self, i, v):
        self.px[i] = v

    def write(self):
        FakePixel.shown.append(self.px[0])


UARTS = {}


def fake_uart(bus, baudrate=9600, tx=None, rx=None, txbuf=None, rxbuf=None, timeout=None):
    return open(UARTS[rx], "r+b")


def fake_sdcard(slot=1, width=1, sck=None, cmd=None, data=None, freq=20000000):
    # As the port: exactly `width` data pins.
    if data is not None and len(data) != width:
        raise ValueError("data argument length must match width %d" % width)
    SD_ARGS.append((slot, width, sck, cmd, tuple(data), freq))
    return SD_CARD[0]


SD_ARGS = []


SD_CARD = [None]

machine = _Module()
machine.Pin = FakePin
machine.RTC = FakeRTC
machine.ADC = FakeADC
machine.WDT = FakeWDT
machine.WDT_RESET = 3
machine.reset_cause = lambda: 3
machine.unique_id = lambda: b"\x12\x34\xab\xcd\x00\x01"
machine.UART = fake_uart
machine.SDCard = fake_sdcard
esp32 = _Module()
esp32.Partition = FakePartition
esp32.NVS = FakeNVS
neopixel = _Module()
neopixel.NeoPixel = FakePixel
sys.modules["machine"] = machine
sys.modules["esp32"] = esp32
sys.modules["neopixel"] = neopixel
"""

_PARTS = r"""
import asyncio
import time
import vfs

from device.boards.esp32s3 import config, hal

logged = []
log = logged.append

# The calendar: round trips, and the unix port's gmtime agrees.
for days in list(range(-800000, 800000, 997)) + [0, -1, 10957, 11016, 11017, 47541]:
    y, m, d = hal.civil_from_days(days)
    assert hal.days_from_civil(y, m, d) == days, days
    if 0 <= days < 40000:
        assert time.gmtime(days * 86400)[:3] == (y, m, d), (days, y, m, d)
assert hal.civil_from_days(11016) == (2000, 2, 29)
print("OK calendar")

clock = hal.RtcClock()
assert clock.faults(), "an RTC at 2000 lost its power"
t = 1767225600 * 1000000 + 123456  # 2026-01-01T00:00:00.123456Z
clock.set_us(t)
assert FakeRTC.now == (2026, 1, 1, 3, 0, 0, 0, 123456), FakeRTC.now
assert clock.now_us() == t
clock.step(-1500000)
assert clock.now_us() == t - 1500000
assert FakeRTC.now[:3] == (2025, 12, 31)
assert clock.faults() == []
print("OK clock")

cfg = config.load("/nonexistent/board.json")
bat = cfg["battery_main"]
FakeADC.uv[bat["pin"]] = 1900000  # 1.9 V at the pin, 2:1 divider: 3.8 V
FakePin.levels[bat["charging_pin"]] = 0
cell = hal.AdcBattery(bat["pin"], bat["divider"], bat["curve"], bat["samples"],
                      bat["charging_pin"])
assert cell.read() == (3800, 55, True), cell.read()
FakeADC.uv[bat["pin"]] = 2200000
assert cell.read()[1] == 100
FakeADC.uv[bat["pin"]] = 1000000
assert cell.read()[1] == 0
print("OK battery")

try:
    config.merge(config.DEFAULTS, {"link": {"knid": "uart"}})
    raise SystemExit("a misspelt key was accepted")
except ValueError:
    pass
with open(TMP + "/board.json", "w") as f:
    f.write('{"link": {"kind": "uart"}, "card": {"kind": "lfs2"}}')
mine = config.load(TMP + "/board.json")
assert mine["link"]["kind"] == "uart" and mine["link"]["baudrate"] == 921600
assert mine["card"]["kind"] == "lfs2" and config.DEFAULTS["card"]["kind"] == "sd"
print("OK config")

# The card: littlefs on a blank flash partition is formatted once, then only mounted.
part = RamDev(64, 4096, 0xFF)
FakePartition.table["card"] = part
card = dict(cfg["card"], kind="lfs2", mount="/card1")
assert hal.mount_card(card, log) == "/card1"
assert [m for m in logged if "formatting" in m]
with open("/card1/x", "wb") as f:
    f.write(b"evidence")
storage = hal.CardStorage("/card1/store")
free, total = storage.usage()
assert 0 < free < total <= 64 * 4096, (free, total)
vfs.umount("/card1")
del logged[:]
hal.mount_card(card, log)
assert open("/card1/x", "rb").read() == b"evidence" and not logged
vfs.umount("/card1")
# ... and a partition holding anything it cannot mount is never formatted.
part.data[0:4096] = b"\x42" * 4096
part.data[4096:8192] = b"\x42" * 4096
before = bytes(part.data)
try:
    hal.mount_card(card, log)
    raise SystemExit("mounted garbage")
except OSError:
    pass
assert bytes(part.data) == before
del FakePartition.table["card"]
try:
    hal.mount_card(card, log)
    raise SystemExit("mounted a missing partition")
except OSError:
    pass
# FAT on the SD card: an unformatted card is refused, untouched; a formatted one mounts.
sd = RamDev(2048, 512, 0)
SD_CARD[0] = sd
card = dict(cfg["card"], mount="/card2")
try:
    hal.mount_card(card, log)
    raise SystemExit("mounted a blank SD card")
except OSError:
    pass
assert sd.data == bytearray(2048 * 512)
vfs.VfsFat.mkfs(sd)
hal.mount_card(card, log)
storage = hal.CardStorage("/card2")
assert storage.usage()[1] > 0
vfs.umount("/card2")
assert SD_ARGS[-1] == (1, 4, 12, 11, (13, 14, 9, 10), 40000000), SD_ARGS[-1]
hal.mount_card(dict(card, width=1), log)
assert SD_ARGS[-1][1:5] == (1, 12, 11, (13,)), SD_ARGS[-1]
vfs.umount("/card2")
print("OK card")

# The seed in NVS: made once, then read; damage or another failure never makes a new one.
from device.keystore import DeviceKey

seeds = hal.NvsSeedStore("bodycam")
assert seeds.read() == b""
key = DeviceKey.load_or_create("/nowhere", log, rng=lambda n: bytes(range(n)), seeds=seeds)
assert FakeNVS.store[("bodycam", "seed")] == bytes(range(32))
again = DeviceKey.load_or_create("/nowhere", log, rng=lambda n: b"\0" * n,
                                 seeds=hal.NvsSeedStore("bodycam"))
assert again.public == key.public
FakeNVS.store[("bodycam", "seed")] = b"short"
try:
    DeviceKey.load_or_create("/nowhere", log, seeds=seeds)
    raise SystemExit("a damaged seed was replaced")
except ValueError:
    pass
FakeNVS.store[("bodycam", "seed")] = OSError(5, "EIO")
try:
    DeviceKey.load_or_create("/nowhere", log, seeds=seeds)
    raise SystemExit("an unreadable seed was replaced")
except OSError:
    pass
print("OK seed")

assert hal.device_id("BWC-") == "BWC-1234ABCD0001"
assert hal.reset_cause() == "watchdog"
dog = hal.Watchdog(30000)
dog.feed()
assert FakeWDT.timeout == 30000 and FakeWDT.feeds == 1
ind = hal.make_indicator({"kind": "pin", "pin": 38, "lit": ["recording"]}, log)
ind.show("recording")
assert FakePin.levels[38] == 1
ind.show("idle")
assert FakePin.levels[38] == 0
pixel = hal.make_indicator(cfg["indicator"], log)
pixel.show("recording")
assert FakePixel.shown[-1] == (64, 0, 0)
print("OK misc")


async def buttons():
    ui = hal.Buttons({"7": ["record", "stop"], "15": ["bookmark"]}, debounce_ms=5, long_ms=80)
    press(15)
    assert await ui.next_action() == ("bookmark", [])
    FakePin.levels[15] = 1
    press(7)
    t0 = time.ticks_ms()

    async def release():
        await asyncio.sleep_ms(30)
        FakePin.levels[7] = 1

    asyncio.create_task(release())
    assert await ui.next_action() == ("record", [])
    assert time.ticks_diff(time.ticks_ms(), t0) < 80
    press(7)

    async def hold():
        await asyncio.sleep_ms(150)
        FakePin.levels[7] = 1

    asyncio.create_task(hold())
    assert await ui.next_action() == ("stop", [])
    press(7, level=1)  # a bounce on release: nothing
    assert await ui.next_action() == ("", [])
    print("OK buttons")


async def cameras():
    FakePin.levels[16] = 0
    cam = hal.StreamCamera(open("/dev/zero", "rb"), ["audio", "video"], enable=16,
                           chunk_ms=100, stall_ms=150)
    buf = bytearray(8192)
    cam.start()
    assert FakePin.levels[16] == 1
    assert await cam.read_into(buf) == 8192
    cam.stop()
    assert FakePin.levels[16] == 0
    silent = hal.StreamCamera(open(FIFO, "r+b"), ["video"], chunk_ms=60, stall_ms=100)
    silent.start()
    t0 = time.ticks_ms()
    assert await silent.read_into(buf) == 0
    assert 50 <= time.ticks_diff(time.ticks_ms(), t0) < 500
    assert silent.faults() == []
    assert await silent.read_into(buf) == 0
    assert silent.faults() and "encoder" in silent.faults()[0]

    class Spi:
        def readinto(self, mv):
            for i in range(len(mv)):
                mv[i] = 0xAB

    FakePin.levels[2] = 1
    spi = hal.SpiCamera(Spi(), 1, 2, 4096, ["video"], chunk_ms=60, stall_ms=1000)
    assert await spi.read_into(buf) == 8192 and buf[8191] == 0xAB
    FakePin.levels[2] = 0
    assert await spi.read_into(buf) == 0

    async def ready_later():
        await asyncio.sleep_ms(20)
        press(2, level=1)

    asyncio.create_task(ready_later())
    spi = hal.SpiCamera(Spi(), 1, 2, 4096, ["video"], chunk_ms=200, stall_ms=1000)
    FakePin.levels[2] = 0
    assert await spi.read_into(buf) == 8192
    print("OK cameras")


asyncio.run(buttons())
asyncio.run(cameras())
"""

_BOOT = r"""
import asyncio

FakePartition.table["card"] = RamDev(128, 4096, 0xFF)
UARTS[18] = FIFO  # the encoder, silent
UARTS[47] = DOCK  # the dock link

with open(TMP + "/board.json", "w") as f:
    f.write('{"link": {"kind": "uart"}, "card": {"kind": "lfs2"},'
            ' "camera": {"stall_ms": 300}, "watchdog": {"timeout_ms": 20000}}')

_run = asyncio.run


def run_for_a_while(coro):
    try:
        _run(asyncio.wait_for_ms(coro, 1500))
    except asyncio.TimeoutError:
        print("BOOT still serving")


asyncio.run = run_for_a_while
from device.boards.esp32s3 import main

logged = []
main.log = lambda text: (logged.append(text), print("device: " + text))
main.main(TMP + "/board.json")
assert [t for t in logged if t.startswith("booted 1234ABCD0001")], logged
assert "ready for the dock" in logged, logged
assert [t for t in logged if "seed in NVS" in t], logged
assert FakeNVS.store[("bodycam", "seed")]
assert FakeWDT.timeout == 20000 and FakeWDT.feeds > 0
print("BOOT ok")
"""


def _script(tmp_path: Path, body: str) -> Path:
    fifo = tmp_path / "encoder.fifo"
    dock = tmp_path / "dock.fifo"
    for path in (fifo, dock):
        if not path.exists():
            os.mkfifo(path)
    prelude = f"TMP = {str(tmp_path)!r}\nFIFO = {str(fifo)!r}\nDOCK = {str(dock)!r}\n"
    script = tmp_path / "board_test.py"
    script.write_text(prelude + _FAKES + body)
    return script


def test_the_board_parts_under_micropython(tmp_path: Path) -> None:
    proc = run_micropython(_script(tmp_path, _PARTS), heapsize="8m", timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    for part in ("calendar", "clock", "battery", "config", "card", "seed", "misc", "buttons",
                 "cameras"):
        assert f"OK {part}" in proc.stdout, out


def test_the_board_boots_to_ready_for_the_dock_under_micropython(tmp_path: Path) -> None:
    proc = run_micropython(_script(tmp_path, _BOOT), heapsize="8m", timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "BOOT ok" in proc.stdout, out
