"""The ESP32-S3 board's parts: device/hal.py over MicroPython's esp32 port.

Each class implements one part of device/hal.py on the chip's peripherals; main.py builds them
from the board's configuration (config.py):

    RtcClock        machine.RTC, µs since the Unix epoch; step(delta_us); ticks_ms (the
                    CPU's monotonic tick, which a step of the RTC never moves)
    AdcBattery      machine.ADC (ADC1, 11 dB, calibrated µV) behind a divider; mV -> % curve
    mount_card      FAT on the SD card (machine.SDCard over SDMMC) or littlefs on a flash
                    partition (esp32.Partition + vfs.VfsLfs2); CardStorage reports its usage
    StreamCamera    the external A/V encoder's stream on a UART or I2S bus } the integration
    SpiCamera       ... or as blocks read over SPI when it flags one ready  } point: see below
    PinIndicator, PixelIndicator   an LED on a pin, or a WS2812
    Buttons         the officer's buttons (machine.Pin IRQs) as device/app.py's `ui`
    Watchdog        machine.WDT
    NvsSeedStore    the device key's seed in NVS (esp32.NVS), off the evidence card
    open_usb_cdc, open_uart, wifi_up   the dock link's stream (USB-CDC, a UART) or network

The camera: the recorder never sees pixels. A separate encoder (an ISP/codec chip, or an
SoC running the sensor) hands this MCU an encoded A/V stream, which the recorder stores,
hashes and signs as it comes. `read_into(buf)` is the whole contract (device/hal.py): fill
`buf` with encoded bytes, waiting at most `chunk_ms`, and return how many; a silent encoder
returns 0 and shows as a self-test fault. Segments are cut at arbitrary bytes, so the encoder's
container must resynchronise at any byte (an MPEG transport stream does: 188-byte packets, a
0x47 sync byte each). A board with another encoder bus adds a class with the same members
(tracks, start, stop, read_into, faults).

Interrupts only set a flag (asyncio.ThreadSafeFlag); debouncing, timing and all other work
happen in asyncio tasks, as micropython-lib's drivers do.
"""

import asyncio
import os
import time

import esp32
import machine
import vfs
from micropython import const

from device import fs

_ADC_AVERAGE_MAX = const(64)
_NVS_NOT_FOUND = const(-0x1102)  # ESP_ERR_NVS_NOT_FOUND, as the port's check_esp_err raises it
_ENODEV = const(19)
_RTC_VALID_FROM = const(2025)  # an RTC reading an earlier year lost its power
_POLL_MS = const(20)
_SEED_SIZE = const(32)
_LFS_BLOCK = const(4096)
_BLOCKDEV_BLOCK_SIZE = const(5)  # vfs block-device ioctl: the block size


# -- clock ---------------------------------------------------------------------------------------
def days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (port-independent: the RTC's
    epoch, 1970 or 2000, never matters)."""
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m - 3 if m > 2 else m + 9) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(z: int) -> tuple:
    """(year, month, day) of a count of days since 1970-01-01."""
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (1 if m <= 2 else 0), m, d


class RtcClock:
    """The chip's RTC, read and set in µs since the Unix epoch.

    The RTC keeps counting through resets, deep sleep and watchdog resets; across a total power
    loss only while its domain is powered (the backup cell). A reading before
    _RTC_VALID_FROM means it was not, and is reported by `faults` for the dock to see (the
    records say "unset" from device/clock.py either way: it reads earlier than its last sync)."""

    def __init__(self) -> None:
        self._rtc = machine.RTC()

    def now_us(self) -> int:
        y, mo, d, _wd, h, mi, s, us = self._rtc.datetime()
        return ((days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s) * 1000000) + us

    def ticks_ms(self):
        return time.ticks_ms()  # esp_timer: monotonic since boot, apart from the RTC

    def step(self, delta_us: int) -> None:
        # Read, add, write: the few tens of µs between them are lost, far below the dock's
        # measured uncertainty (milliseconds over USB or Wi-Fi).
        self.set_us(self.now_us() + delta_us)

    def set_us(self, t_us: int) -> None:
        secs, us = divmod(t_us, 1000000)
        days, secs = divmod(secs, 86400)
        y, mo, d = civil_from_days(days)
        weekday = (days + 3) % 7  # 0 = Monday; 1970-01-01 was a Thursday
        self._rtc.datetime((y, mo, d, weekday, secs // 3600, secs // 60 % 60, secs % 60, us))

    def faults(self) -> list:
        if self._rtc.datetime()[0] < _RTC_VALID_FROM:
            return ["clock: the RTC lost power (reads before %d)" % _RTC_VALID_FROM]
        return []


# -- batteries -----------------------------------------------------------------------------------
def percent(curve, mv: int) -> int:
    """State of charge from a cell voltage: linear between the curve's (mV, %) points, which
    run from full to empty."""
    if mv >= curve[0][0]:
        return curve[0][1]
    for i in range(1, len(curve)):
        hi_mv, hi_pct = curve[i - 1]
        lo_mv, lo_pct = curve[i]
        if mv >= lo_mv:
            if hi_mv == lo_mv:
                return lo_pct
            return lo_pct + (hi_pct - lo_pct) * (mv - lo_mv) // (hi_mv - lo_mv)
    return curve[-1][1]


class AdcBattery:
    """A cell's voltage through a divider on an ADC1 pin (ADC2 is unusable while Wi-Fi runs),
    11 dB attenuation (up to ~3.1 V at the pin), read as the port's calibrated µV and averaged.
    `charging_pin`: the charger's status output, low while charging (-1: none)."""

    def __init__(self, pin: int, divider, curve, samples: int = 8,
                 charging_pin: int = -1) -> None:
        self._adc = machine.ADC(machine.Pin(pin), atten=machine.ADC.ATTN_11DB)
        self._num = int(divider[0])
        self._den = int(divider[1])
        if self._num <= 0 or self._den <= 0:
            raise ValueError("battery divider must be two positive integers")
        points = sorted(((int(p[0]), int(p[1])) for p in curve), reverse=True)
        if not points:
            raise ValueError("battery curve is empty")
        self._curve = points
        self._samples = min(max(1, samples), _ADC_AVERAGE_MAX)
        self._charging = None
        if charging_pin >= 0:
            self._charging = machine.Pin(charging_pin, machine.Pin.IN, machine.Pin.PULL_UP)

    def millivolts(self) -> int:
        total = 0
        for _ in range(self._samples):
            total += self._adc.read_uv()
        return total // self._samples * self._num // self._den // 1000

    def read(self):
        mv = self.millivolts()
        charging = self._charging is not None and self._charging.value() == 0
        return mv, percent(self._curve, mv), charging


# -- the card ------------------------------------------------------------------------------------
def _erased(part) -> bool:
    """True if the partition's first two blocks (littlefs' superblock pair) were never
    written: all 0xFF, as flash comes erased."""
    buf = bytearray(_LFS_BLOCK)
    blank = b"\xff" * _LFS_BLOCK
    for block in (0, 1):
        part.readblocks(block, buf)
        if buf != blank:
            return False
    return True


def mount_card(card: dict, log) -> str:
    """Mount the evidence card as the configuration says; returns the mount point.

    sd: FAT on an SD card (machine.SDCard over SDMMC: `slot`, `width`, `sck` (the clock),
    `cmd` and the first `width` of the `data` pins, `freq`). The firmware never formats it:
    a card that does not mount is a fault to fix at the dock, not evidence to erase.
    lfs2: littlefs on the flash partition labelled `partition`, formatted only while its
    superblocks were never written."""
    at = card["mount"]
    kind = card["kind"]
    if kind == "sd":
        width = card["width"]
        data = tuple(card["data"][:width])  # the port wants exactly `width` data pins
        if len(data) != width:
            raise ValueError("card: %d data pins for a %d-bit bus" % (len(data), width))
        # SDMMC through the GPIO matrix: `sck` is the clock pin.
        sd = machine.SDCard(slot=card["slot"], width=width, sck=card["sck"], cmd=card["cmd"],
                            data=data, freq=card["freq"])
        # (The stubs derive the file systems from AbstractBlockDev: they are not abstract.)
        vfs.mount(vfs.VfsFat(sd), at)  # type: ignore[abstract]
    elif kind == "lfs2":
        found = esp32.Partition.find(esp32.Partition.TYPE_DATA, label=card["partition"])
        if not found:
            raise OSError(_ENODEV, "no flash partition labelled %r" % card["partition"])
        part = found[0]
        if part.ioctl(_BLOCKDEV_BLOCK_SIZE, 0) != _LFS_BLOCK:
            raise OSError(_ENODEV, "partition %r: unexpected block size" % card["partition"])
        try:
            vfs.mount(vfs.VfsLfs2(part), at)  # type: ignore[abstract]
        except OSError:
            if not _erased(part):
                raise
            log("card: formatting the blank partition %r (littlefs)" % card["partition"])
            vfs.VfsLfs2.mkfs(part)
            vfs.mount(vfs.VfsLfs2(part), at)  # type: ignore[abstract]
    else:
        raise ValueError("card kind must be sd or lfs2, not %r" % kind)
    return at


class CardStorage:
    """The mounted card: the record store's root and how full its file system is."""

    def __init__(self, root: str) -> None:
        self.root = root
        fs.makedirs(root)

    def usage(self):
        st = os.statvfs(self.root)
        return st[4] * st[1], st[2] * st[1]  # f_bavail, f_blocks in f_frsize units


# -- the camera (the external encoder) -----------------------------------------------------------
class _Encoder:
    """What both encoder buses share: the enable line, the tracks, the stall fault."""

    def __init__(self, tracks, enable: int, chunk_ms: int, stall_ms: int) -> None:
        self.tracks = list(tracks)
        self._enable = None
        if enable >= 0:
            self._enable = machine.Pin(enable, machine.Pin.OUT, value=0)
        self._chunk_ms = chunk_ms
        self._stall_ms = stall_ms
        self._last = time.ticks_ms()
        self._stalled = False

    def start(self) -> None:
        if self._enable is not None:
            self._enable.value(1)
        self._last = time.ticks_ms()

    def stop(self) -> None:
        if self._enable is not None:
            self._enable.value(0)

    def _took(self, n: int) -> int:
        now = time.ticks_ms()
        if n:
            self._last = now
            self._stalled = False
        elif time.ticks_diff(now, self._last) >= self._stall_ms:
            self._stalled = True
        return n

    def faults(self) -> list:
        if self._stalled:
            return ["camera: no data from the encoder for %d ms" % self._stall_ms]
        return []


class StreamCamera(_Encoder):
    """The encoder's byte stream on anything asyncio can poll: machine.UART (up to ~5 Mbaud
    on the S3) or machine.I2S in receive mode."""

    def __init__(self, stream, tracks, enable: int = -1, chunk_ms: int = 200,
                 stall_ms: int = 2000) -> None:
        super().__init__(tracks, enable, chunk_ms, stall_ms)
        self._reader = asyncio.StreamReader(stream)

    async def read_into(self, buf) -> int:
        mv = memoryview(buf)
        got = 0
        t0 = time.ticks_ms()
        while got < len(buf):
            left = self._chunk_ms - time.ticks_diff(time.ticks_ms(), t0)
            if left <= 0:
                break
            try:
                n: int = await asyncio.wait_for_ms(self._reader.readinto(mv[got:]), left)
            except asyncio.TimeoutError:  # noqa: UP041  (MicroPython has no builtin one)
                break
            got += n or 0
        return self._took(got)


class SpiCamera(_Encoder):
    """The encoder as an SPI peripheral: it raises `ready` when a block of `block` bytes
    waits, and this MCU clocks it out (the bus runs at tens of MHz, so a block is read in
    well under a millisecond; the wait for the next one is where other tasks run)."""

    def __init__(self, spi, cs: int, ready: int, block: int, tracks, enable: int = -1,
                 chunk_ms: int = 200, stall_ms: int = 2000) -> None:
        super().__init__(tracks, enable, chunk_ms, stall_ms)
        self._spi = spi
        self._cs = machine.Pin(cs, machine.Pin.OUT, value=1)
        self._ready = machine.Pin(ready, machine.Pin.IN)
        self._block = block
        self._flag = asyncio.ThreadSafeFlag()
        self._ready.irq(self._irq, trigger=machine.Pin.IRQ_RISING)

    def _irq(self, _pin) -> None:
        self._flag.set()  # nothing else in an interrupt

    async def read_into(self, buf) -> int:
        mv = memoryview(buf)
        got = 0
        t0 = time.ticks_ms()
        while got + self._block <= len(buf):
            self._flag.clear()  # before looking at the line: an edge after this sets it
            if not self._ready.value():
                left = self._chunk_ms - time.ticks_diff(time.ticks_ms(), t0)
                if left <= 0:
                    break
                try:
                    await asyncio.wait_for_ms(self._flag.wait(), left)
                except asyncio.TimeoutError:  # noqa: UP041  (MicroPython has no builtin one)
                    break
                continue  # look at the line again
            self._cs.value(0)
            try:
                self._spi.readinto(mv[got:got + self._block])
            finally:
                self._cs.value(1)
            got += self._block
        return self._took(got)


def make_camera(cam: dict):
    """The encoder's link as the configuration says (uart, i2s or spi)."""
    kind = cam["kind"]
    common = {"enable": cam["enable"], "chunk_ms": cam["chunk_ms"],
              "stall_ms": cam["stall_ms"]}
    if kind == "uart":
        uart = machine.UART(cam["bus"], baudrate=cam["baudrate"], rx=cam["rx"], tx=cam["tx"],
                            rxbuf=cam["rxbuf"], timeout=0)
        return StreamCamera(uart, cam["tracks"], **common)
    if kind == "i2s":
        i2s = machine.I2S(cam["bus"], sck=cam["sck"], ws=cam["ws"], sd=cam["sd"],
                          mode=machine.I2S.RX, bits=32, format=machine.I2S.STEREO,
                          rate=cam["rate"], ibuf=cam["rxbuf"])
        return StreamCamera(i2s, cam["tracks"], **common)
    if kind == "spi":
        spi = machine.SPI(cam["bus"], baudrate=cam["freq"], sck=cam["sck"], mosi=cam["mosi"],
                          miso=cam["miso"])
        return SpiCamera(spi, cam["cs"], cam["ready"], cam["block"], cam["tracks"], **common)
    raise ValueError("camera kind must be uart, i2s or spi, not %r" % kind)


# -- indicator -----------------------------------------------------------------------------------
_COLOURS = {
    # state: (r, g, b); kept dim, it is worn on a chest
    "recording": (64, 0, 0),
    "refused": (64, 24, 0),
    "battery_low": (48, 48, 0),
    "storage_full": (64, 0, 64),
    "fault": (64, 0, 64),
    "booting": (0, 0, 16),
    "idle": (0, 8, 0),
}


class PinIndicator:
    """An LED on a pin, lit in the states listed in `lit`."""

    def __init__(self, pin: int, lit, log) -> None:
        self._pin = machine.Pin(pin, machine.Pin.OUT, value=0)
        self._lit = list(lit)
        self._log = log
        self.state = "idle"

    def show(self, state: str) -> None:
        self.state = state
        self._pin.value(1 if state in self._lit else 0)
        self._log("indicator: " + state)


class PixelIndicator:
    """A WS2812 RGB LED: one colour per state (_COLOURS; others: off)."""

    def __init__(self, pin: int, log) -> None:
        from neopixel import NeoPixel

        self._np = NeoPixel(machine.Pin(pin, machine.Pin.OUT), 1)
        self._log = log
        self.state = "idle"

    def show(self, state: str) -> None:
        self.state = state
        self._np[0] = _COLOURS.get(state, (0, 0, 0))
        self._np.write()
        self._log("indicator: " + state)


def make_indicator(ind: dict, log):
    if ind["kind"] == "neopixel":
        return PixelIndicator(ind["pin"], log)
    if ind["kind"] == "pin":
        return PinIndicator(ind["pin"], ind["lit"], log)
    raise ValueError("indicator kind must be neopixel or pin, not %r" % ind["kind"])


# -- buttons -------------------------------------------------------------------------------------
class Buttons:
    """The officer's buttons as device/app.py's `ui`: `await next_action() -> (action, args)`.

    `pins` maps a GPIO number (as a string, JSON's keys) to [short press action, long press
    action or ""]. A press pulls its pin low (internal pull-up). The pins' IRQs only set one
    flag; next_action (awaited by the recorder's UI task) debounces, tells short from long
    and answers. A phase (matter, case number, officer id) needs words, so it is started from
    the dock's menu, not from buttons."""

    def __init__(self, pins: dict, debounce_ms: int = 30, long_ms: int = 1500) -> None:
        self._flag = asyncio.ThreadSafeFlag()
        self._debounce = debounce_ms
        self._long = long_ms
        self._buttons = []
        for gpio, actions in pins.items():
            pin = machine.Pin(int(gpio), machine.Pin.IN, machine.Pin.PULL_UP)
            pin.irq(self._irq, trigger=machine.Pin.IRQ_FALLING)
            self._buttons.append((pin, actions[0], actions[1] if len(actions) > 1 else ""))

    def _irq(self, _pin) -> None:
        self._flag.set()  # nothing else in an interrupt

    async def next_action(self):
        await self._flag.wait()
        await asyncio.sleep_ms(self._debounce)
        for pin, short, long in self._buttons:
            if pin.value():
                continue  # not this one (or a bounce)
            t0 = time.ticks_ms()
            while not pin.value():
                if long and time.ticks_diff(time.ticks_ms(), t0) >= self._long:
                    while not pin.value():
                        await asyncio.sleep_ms(_POLL_MS)
                    return long, []
                if not long:
                    break  # no long action: answer at once
                await asyncio.sleep_ms(_POLL_MS)
            return short, []
        return "", []


# -- watchdog, reset cause, identity -------------------------------------------------------------
class Watchdog:
    """machine.WDT: once started it cannot be stopped; the recorder feeds it while healthy."""

    def __init__(self, timeout_ms: int) -> None:
        self._wdt = machine.WDT(timeout=timeout_ms)

    def feed(self) -> None:
        self._wdt.feed()


def reset_cause() -> str:
    """Why the board last reset, as device/app.py wants it: "watchdog", or "" (power-on and
    the rest)."""
    return "watchdog" if machine.reset_cause() == machine.WDT_RESET else ""


def device_id(prefix: str = "") -> str:
    """The chip's unique id (its factory MAC, burnt into eFuse) in hex."""
    from binascii import hexlify

    return prefix + hexlify(machine.unique_id()).decode().upper()


# -- the key's seed ------------------------------------------------------------------------------
class NvsSeedStore:
    """The device key's 32-byte seed in the chip's NVS partition, off the evidence card.

    A card that is taken, cloned or lost carries no key. `read()` returns the seed, b"" if
    none was ever written; any other failure raises, so that an unreadable seed is never
    replaced by a new one (a new key would break the record chain's continuity of signer).
    With flash encryption and NVS encryption enabled (eFuse; a production step), the seed is
    not readable off the flash chip either."""

    KEY = "seed"
    where = "NVS"

    def __init__(self, namespace: str) -> None:
        self._nvs = esp32.NVS(namespace)

    def read(self) -> bytes:
        buf = bytearray(_SEED_SIZE * 2)
        try:
            n = self._nvs.get_blob(self.KEY, buf)
        except OSError as exc:
            if exc.args and exc.args[0] == _NVS_NOT_FOUND:
                return b""
            raise
        if n != _SEED_SIZE:
            raise ValueError("device key seed in NVS is damaged (%d bytes)" % n)
        return bytes(buf[:n])

    def write_once(self, seed: bytes) -> None:
        if len(seed) != _SEED_SIZE:
            raise ValueError("a seed is %d bytes" % _SEED_SIZE)
        self._nvs.set_blob(self.KEY, seed)
        self._nvs.commit()  # NVS writes an entry atomically: a cut leaves it absent or whole


# -- the dock link -------------------------------------------------------------------------------
def open_usb_cdc(txbuf: int, rxbuf: int):
    """A second USB-CDC serial port beside the REPL's: micropython-lib's usb-device-cdc
    (`mip.install("usb-device-cdc")`) over machine.USBDevice. Not the REPL's own port
    (sys.stdin/stdout): there a 0x03 byte in a frame would interrupt the firmware, and the
    REPL's output would land inside the dock's frames. Non-blocking (timeout 0), pollable by
    asyncio."""
    import usb.device  # type: ignore[import-not-found]  # micropython-lib, not in the port
    from usb.device.cdc import CDCInterface  # type: ignore[import-not-found]

    cdc = CDCInterface(timeout=0, txbuf=txbuf, rxbuf=rxbuf)
    usb.device.get().init(cdc, builtin_driver=True)
    return cdc


def open_uart(bus: int, tx: int, rx: int, baudrate: int, txbuf: int, rxbuf: int):
    """A UART as the dock link (a dock with a USB-serial bridge on the cradle's pogo pins)."""
    return machine.UART(bus, baudrate=baudrate, tx=tx, rx=rx, txbuf=txbuf, rxbuf=rxbuf,
                        timeout=0)


def wifi_up(ssid: str, password: str, log) -> None:
    """Start joining the Wi-Fi network; the port reconnects on its own, and the MQTT link
    retries with backoff until the network is there (nothing waits here)."""
    import network

    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    if not wlan.isconnected():
        wlan.connect(ssid, password)
    log("wifi: joining %r" % ssid)
