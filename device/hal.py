"""The hardware the recorder core may touch, and nothing else.

Each part is a small object injected into the core; `device/boards/unix_sim/hal.py` implements
them for the MicroPython unix port, a board implements them over its drivers
(device/boards/<name>/). The core never imports a board or a driver itself.

clock    now_us() -> int (µs since the Unix epoch); step(delta_us) moves the clock;
         ticks_ms() -> int: a monotonic millisecond tick that no step moves, in the port's
         time.ticks_ms range (compare two with time.ticks_diff). now_us is evidence: what
         the clock said, for the signed timestamps. Every length, cadence and timeout (a
         segment's, a pre-event piece's, "still alive" notes) runs on ticks_ms, so a dock
         stepping the clock by hours never makes a segment longer or shorter.
battery_main, battery_backup
         read() -> (millivolts, percent, charging: bool)
storage  root: str (directory for the record store); usage() -> (free_bytes, total_bytes)
camera   tracks: list of track names; start(); await read_into(buf) -> bytes of encoded A/V
         written into buf (waits at most one chunk's worth of time); stop()
indicator
         show(state: str) -- LED/buzzer/haptic feedback ("recording", "refused", "idle", ...)
link     the dock link: a stream asyncio can poll (UART, USB-CDC, a pty in simulation),
         wrapped by device/link.py
selftest() -> list of fault strings (empty when healthy)
watchdog feed() -- the board's hardware watchdog (machine.WDT on a board; on the unix port
         the simulator outside the firmware process, device/boards/unix_sim/hal.py). The
         recording loop feeds it while it is healthy, and boot feeds it per unit of progress
         (each step of device/app.py's boot; in the store's recovery each directory entry
         examined, record read and chunk hashed or copied), never from a timer or a loop that
         waits, so only a real hang starves it; then the board resets and the next boot
         records the gap. Optional (None: no watchdog).
"""


class Hal:
    """The set of parts a recorder is built from."""

    def __init__(self, device_id, clock, battery_main, battery_backup, storage, camera,
                 indicator, link, selftest, watchdog=None) -> None:
        self.device_id = device_id
        self.clock = clock
        self.battery_main = battery_main
        self.battery_backup = battery_backup
        self.storage = storage
        self.camera = camera
        self.indicator = indicator
        self.link = link
        self.selftest = selftest
        self.watchdog = watchdog


def battery_state(cell) -> dict:
    """A battery's reading as the protocol and the records carry it."""
    mv, pct, charging = cell.read()
    return {"mv": mv, "pct": pct, "charging": charging}
