"""Deploy and commission over a board's REPL, then boot the recorder from what was installed.

The board is the MicroPython unix port's REPL on a pty pair (the port stands on one side, the
`micropython` process on the other), in a temporary directory that stands for its flash.
`bodycam device deploy` installs the mpy-cross build there through mpremote's raw REPL,
`bodycam device commission` makes the device key there; then the recorder firmware boots
from that directory alone (MICROPYPATH), records, and is enrolled and docked through pyserial
as every test here docks a recorder.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import subprocess
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from host_agent.cli import main
from host_agent.dock.clocksync import SyncResult
from host_agent.dock.readiness import Thresholds, assess
from host_agent.dock.session import DockSession, dock
from host_agent.lab.nullmodem import NullModem
from host_agent.lab.simulator import micropython_command
from host_agent.lab.unit import device_fingerprint
from host_agent.transport.serial import SerialTransport
from host_agent.vault import Vault, timeline
from protocol import policy
from tests.hil.conftest import HEAPSIZE, lab

pytestmark = pytest.mark.simulator  # the board is the unix port here, not --device-port


def bodycam(*argv: str) -> tuple[int, str, str]:
    """Run the `bodycam` command in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@contextlib.contextmanager
def repl_board(flash: Path) -> Iterator[str]:
    """A board: the unix port's REPL on a pty, working in `flash`; yields the port to open."""
    flash.mkdir(parents=True, exist_ok=True)
    board_end, port_end = os.openpty()
    # Raw before the REPL starts (a UART has no line discipline in the way): while it runs a
    # piece of code the unix port restores the terminal mode it saw when it last read a line,
    # and the pty's default mode would echo the board's answer back into its input and take
    # the Ctrl-D that ends it for an end of file.
    tty.setraw(port_end)
    port = os.ttyname(port_end)
    os.close(port_end)  # mpremote opens it by name, as it opens /dev/ttyACM0
    proc = subprocess.Popen([micropython_command()], stdin=board_end, stdout=board_end,
                            stderr=board_end, cwd=flash,
                            env=dict(os.environ, MICROPYPATH=".frozen"))
    os.close(board_end)
    try:
        yield port
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def boot_installed(flash: Path, log: Path) -> Iterator[str]:
    """The recorder firmware started from the installed tree only (with the port's own frozen
    modules, asyncio among them; no --unit-key: the one commissioned on its storage); yields
    the dock's end of its line."""
    modem = NullModem().start()
    cmd = [micropython_command(), "-X", f"heapsize={HEAPSIZE}", "-m",
           "device.boards.unix_sim.main", "--link", modem.device_path,
           "--storage", str(flash / "card"), "--segments", "2", "--segment-ms", "200",
           "--skew-us", "700000"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=flash, stdin=subprocess.PIPE, stdout=out, stderr=out,
                                env=dict(os.environ, MICROPYPATH=f".frozen:{flash}"))
    try:
        deadline = time.monotonic() + 30
        while "ready for the dock" not in log.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        yield modem.host_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        modem.close()


def test_deploy_commission_boot_record_enrol_and_dock(tmp_path: Path) -> None:
    unit, identity = lab(tmp_path)
    flash = tmp_path / "flash"
    with repl_board(flash) as port:
        code, out, err = bodycam("device", "deploy", "--port", port,
                                 "--build-dir", str(tmp_path / "build"), "--json")
        assert code == 0, err
        first = json.loads(out)
        assert first["before"] is None and first["removed"] == [] and first["unchanged"] == 0
        assert "device/boards/unix_sim/main.mpy" in first["copied"]
        assert "device/commission.mpy" in first["copied"]
        installed = json.loads((flash / "firmware.json").read_text())
        assert installed["version"] == first["version"] and installed["build"] == first["build"]
        assert sorted(installed["files"]) == sorted(first["copied"])
        assert not list(flash.rglob("*.py"))  # the board gets the build, never the sources

        # Again: nothing to copy, and the board reports what it holds.
        code, out, err = bodycam("device", "deploy", "--port", port)
        assert code == 0, err
        assert f"the board had firmware {first['version']} (build {first['build']})" in out
        assert "were up to date" in out

        # A damaged module and a stale one: only those are touched.
        with open(flash / "device" / "app.mpy", "ab") as f:
            f.write(b"\0")
        (flash / "device" / "old.py").write_text("raise SystemExit('stale')\n")
        code, out, err = bodycam("device", "deploy", "--port", port, "--json")
        assert code == 0, err
        again = json.loads(out)
        assert again["before"]["intact"] is False
        assert again["copied"] == ["device/app.mpy"] and again["removed"] == ["device/old.py"]
        assert again["unchanged"] == len(first["copied"]) - 1
        assert not (flash / "device" / "old.py").exists()

        # Commission: the key is made on the board; only its id comes back.
        code, out, err = bodycam("device", "commission", "--port", port,
                                 "--unit-key", str(tmp_path / "pki" / "unit" / "unit.pub"))
        assert code == 0, err
    seed = (flash / "card" / "device.key").read_bytes()
    fingerprint = device_fingerprint(flash / "card")
    assert f"device key {fingerprint} (made on the recorder now" in out
    assert seed.hex() not in out and seed.hex() not in err
    assert (flash / "card" / "unit.pub").read_bytes() == unit.public
    enroll = [line.strip() for line in out.splitlines()
              if line.strip().startswith("bodycam enroll")]
    assert enroll == [f"bodycam enroll --port PORT --vault VAULT"
                      f" --expect-fingerprint {fingerprint}"]

    with boot_installed(flash, tmp_path / "device.log") as dock_port:
        # The enrolment the commissioning printed, with this dock's port and vault.
        argv = [{"PORT": dock_port, "VAULT": str(tmp_path / "vault")}.get(a, a)
                for a in shlex.split(enroll[0])[1:]]
        code, out, err = bodycam(*argv, "--identity", str(tmp_path / "pki" / "test-dock"))
        assert code == 0, err
        assert "enrolled: SIM-" in out and fingerprint in out

        # A unit policy that approves another firmware: offloaded all the same, not released.
        doc = policy.annex()
        doc["version"], doc["approved_firmware"] = 2, ["0.0.0-approved"]
        signed = policy.sign(doc, unit.kid, unit.sign)
        transport = SerialTransport(dock_port)
        transport.open()
        try:
            with Vault.open(tmp_path / "vault", create=False) as vault:
                report = dock(DockSession(transport, vault, identity), policy_file=signed)
                records = timeline.load_records(vault, report.device_id)
        finally:
            transport.close()
    assert report.firmware == installed["version"]  # identify reports what deploy installed
    assert report.key_fingerprint == fingerprint and not report.newly_enrolled
    assert report.policy == {"adopted": "gx-water-2019/2"}  # the recorder took the list too
    off = report.offload
    assert off["quarantined"] == [] and off["segments"] == 2
    assert off["released"] == off["stored"] and len(off["stored"]) >= 3
    assert {r["fw"] for r in records} == {installed["version"]}  # every record carries "fw"
    sync = SyncResult(**report.clock)
    status = report.readiness["status"]
    refused = assess(status, sync, Thresholds.from_policy(doc), firmware=report.firmware)
    assert not refused.ready
    assert refused.reasons == [f"firmware {report.firmware} is not approved by the unit"
                               " policy (approved: 0.0.0-approved)"]
    doc["approved_firmware"].append(report.firmware)
    assert assess(status, sync, Thresholds.from_policy(doc), firmware=report.firmware).ready


def test_a_port_without_a_repl_is_one_line_naming_it(tmp_path: Path) -> None:
    silent_end, port_end = os.openpty()  # a line whose other end answers nothing
    silent = os.ttyname(port_end)
    os.close(port_end)
    plain = tmp_path / "not-a-port"
    plain.write_text("")
    try:
        started = time.monotonic()
        code, out, err = bodycam("device", "deploy", "--port", silent)
        assert time.monotonic() - started < 10
    finally:
        os.close(silent_end)
    assert code == 2 and out == ""
    assert err.splitlines() == [f"deploy: {silent}: no MicroPython REPL answered"
                                " (no raw REPL prompt within 3 s)"]
    for command, extra in (("deploy", []), ("commission", ["--unit-key", "ab" * 32])):
        code, out, err = bodycam("device", command, "--port", str(plain), *extra)
        assert code == 2 and out == ""
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        assert err.startswith(f"{command}: {plain}: cannot open the port")


def test_commission_before_deploy_and_to_another_unit_say_so(tmp_path: Path) -> None:
    unit, _ = lab(tmp_path)
    with repl_board(tmp_path / "flash") as port:
        code, out, err = bodycam("device", "commission", "--port", port,
                                 "--unit-key", unit.public.hex())
        assert code == 2 and out == ""
        assert err == (f"commission: {port}: no recorder firmware on the board: run"
                       " `bodycam device deploy` first\n")
        assert bodycam("device", "deploy", "--port", port)[0] == 0
        code, out, err = bodycam("device", "commission", "--port", port,
                                 "--unit-key", unit.public.hex(), "--json")
        assert code == 0, err
        done = json.loads(out)
        assert done["new_key"] is True and done["unit"] == unit.kid.hex()
        code, out, err = bodycam("device", "commission", "--port", port,
                                 "--unit-key", "ab" * 32)
        assert code == 2
        assert err == (f"commission: {port}: commissioning failed: PolicyError: this recorder"
                       " is commissioned to another unit\n")
        code, out, err = bodycam("device", "commission", "--port", port,
                                 "--unit-key", unit.public.hex(), "--json")
        assert code == 0 and json.loads(out)["new_key"] is False
        assert json.loads(out)["fingerprint"] == done["fingerprint"]  # the same key, kept


def test_a_board_with_its_own_key_store_is_not_given_a_seed_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An ESP32 keeps its seed in NVS: commissioning it the unix port's way would leave a seed
    on its card that its firmware never uses. Refused before anything runs on the board."""
    from host_agent.firmware import board

    ran: list[str] = []

    def run(self: board.Board, code: str, what: str = "", timeout: float = 10.0) -> str:
        ran.append(code)
        return "esp32\r\n" if "sys.platform" in code else ""

    monkeypatch.setattr(board.Board, "open", lambda self: self)
    monkeypatch.setattr(board.Board, "run", run)
    code, out, err = bodycam("device", "commission", "--port", "/dev/ttyACM0",
                             "--unit-key", "ab" * 32)
    assert code == 2 and out == ""
    assert err == ("commission: /dev/ttyACM0: this board (esp32) keeps its device key in a"
                   " store of its own; commissioning over the REPL is wired for the unix port's"
                   " file store only\n")
    assert len(ran) == 1  # only the question: no key looked for, none made
