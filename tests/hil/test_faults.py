"""Fault trials: power cuts of the device and of the dock agent, a full disk, clock jumps.

Each trial breaks an offload at a random moment (seeded), re-docks, and checks the
invariants that make the vault evidence:

- no segment lost: every record the device produced is in the vault, byte for byte,
- none duplicated: each (device, seq) once in the index, each object once on disk,
- the vault verifies (`Vault.verify() == []`),
- the device freed only what was released: every record missing on the device is in the
  vault with the same record hash (checked right after the fault, and after the re-dock).

This file is the quick set CI runs; tools/fault_campaign.py runs the same trials by the
hundred and prints a summary.
"""

from __future__ import annotations

import contextlib
import errno
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from host_agent.dock.session import DockSession, SessionError, dock
from host_agent.keys import DockIdentity, UnitKey
from host_agent.lab.nullmodem import Impairment
from host_agent.lab.simulator import SimConfig, SimulatedRecorder
from host_agent.lab.unit import lab_unit
from host_agent.transport import TransportError
from host_agent.transport.serial import SerialTransport
from host_agent.vault import Vault, VaultError
from protocol.manifest import record_hash
from tests.hil.conftest import HEAPSIZE

pytestmark = pytest.mark.simulator

REPO = Path(__file__).resolve().parents[2]
# Offloads are stretched on a 12 Mbit/s line (1.5 MB/s) so a random kill lands inside one.
SLOW_LINE = Impairment(rate_bps=12_000_000, bits_per_byte=8)
SEGMENT = dict(segments=2, segment_ms=250, bitrate=16_000_000, heapsize=HEAPSIZE,
               skew_us=0, drift_ppm=0)


class InvariantBroken(AssertionError):
    pass


@dataclass
class Lineage:
    """One recorder's storage and one vault, kept across trials (a recorder's working life)."""

    base: Path
    expected: dict[int, bytes] = field(default_factory=dict)  # seq -> record hash ever made
    device_id: str = ""

    @property
    def storage(self) -> Path:
        return self.base / "device"

    @property
    def vault_dir(self) -> Path:
        return self.base / "vault"

    @property
    def authority(self) -> tuple[UnitKey, DockIdentity]:
        """The unit the recorder is commissioned to, and the dock it certified."""
        return lab_unit(self.base / "pki", "fault-dock")


def device_snapshot(storage: Path) -> dict[int, bytes]:
    """seq -> record hash of the records still on the device."""
    out = {}
    rec_dir = storage / "rec"
    if rec_dir.is_dir():
        for p in rec_dir.glob("*.cose"):
            with contextlib.suppress(OSError):
                out[int(p.stem)] = record_hash(p.read_bytes())
    return out


def vault_snapshot(vault_dir: Path, device_id: str) -> dict[int, bytes]:
    """seq -> record hash of what the vault holds for the device (empty if no vault yet)."""
    if not (vault_dir / "vault.sqlite").exists():
        return {}
    with Vault.open(vault_dir, create=False) as v:
        rows = v.records(device_id)
        seqs = [int(r["seq"]) for r in rows]  # type: ignore[call-overload]
        if len(seqs) != len(set(seqs)):
            raise InvariantBroken(f"duplicated records in the index: {seqs}")
        return {int(r["seq"]): bytes(r["record_sha256"]) for r in rows}  # type: ignore


def check_freed_only_released(life: Lineage, when: str) -> None:
    on_device = device_snapshot(life.storage)
    in_vault = vault_snapshot(life.vault_dir, life.device_id)
    for seq, h in life.expected.items():
        if seq in on_device:
            if on_device[seq] != h:
                raise InvariantBroken(f"{when}: record {seq} changed on the device")
            continue
        if in_vault.get(seq) != h:
            raise InvariantBroken(
                f"{when}: record {seq} was freed on the device but the vault "
                f"{'holds other bytes' if seq in in_vault else 'does not hold it'}")


def check_all(life: Lineage, when: str) -> None:
    """The full invariants once a re-dock has completed."""
    check_freed_only_released(life, when)
    in_vault = vault_snapshot(life.vault_dir, life.device_id)
    lost = sorted(set(life.expected) - set(in_vault))
    if lost:
        raise InvariantBroken(f"{when}: records lost (not in the vault): {lost}")
    with Vault.open(life.vault_dir, create=False) as v:
        problems = v.verify()
        if problems:
            raise InvariantBroken(f"{when}: vault verify: {[p.__dict__ for p in problems]}")
        if v.quarantined(life.device_id):
            raise InvariantBroken(f"{when}: quarantined: {v.quarantined(life.device_id)}")
        segments = {bytes(r["segment_sha256"]) for r in v.records(life.device_id)  # type: ignore
                    if r.get("segment_sha256")}
    objects = [p.name for p in (life.vault_dir / "objects").rglob("*") if p.is_file()]
    if len(objects) != len(set(objects)) or set(objects) != {h.hex() for h in segments}:
        raise InvariantBroken(f"{when}: {len(objects)} objects for {len(segments)} segments")
    if device_snapshot(life.storage):
        raise InvariantBroken(f"{when}: records left on the device after a full docking")


def wait_ready(rec: SimulatedRecorder, log_from: int = 0, timeout: float = 30.0) -> None:
    """Wait until this boot of the recorder (its log from `log_from` on) serves the dock."""
    deadline = time.monotonic() + timeout
    while "ready for the dock" not in rec.log_text()[log_from:]:
        if rec.proc is None or rec.proc.poll() is not None:
            raise RuntimeError("recorder exited:\n" + rec.log_text()[-2000:])
        if time.monotonic() > deadline:
            raise RuntimeError("recorder not ready:\n" + rec.log_text()[-2000:])
        time.sleep(0.02)


@contextlib.contextmanager
def recorder(life: Lineage, **config: Any) -> Iterator[SimulatedRecorder]:
    """Boot the lineage's recorder, record what `config` asks, note what it made."""
    cfg = SimConfig(**{**SEGMENT, "unit_key": life.authority[0].public.hex(), **config})
    log_path = life.base / "device.log"
    log_from = len(log_path.read_text(errors="replace")) if log_path.exists() else 0
    rec = SimulatedRecorder(life.storage, cfg, log_path).start()
    try:
        wait_ready(rec, log_from)
        life.device_id = (life.storage / "device.id").read_text().strip()
        for seq, h in device_snapshot(life.storage).items():
            if life.expected.setdefault(seq, h) != h:
                raise InvariantBroken(f"record {seq} changed on the device")
        yield rec
    finally:
        rec.stop()


def redock(life: Lineage, rec: SimulatedRecorder, timeout: float = 5.0) -> dict[str, Any]:
    transport = SerialTransport(rec.port)
    transport.open()
    try:
        with Vault.open(life.vault_dir) as vault:
            session = DockSession(transport, vault, life.authority[1], enroll_unknown=True,
                                  timeout=timeout)
            return dock(session).to_dict()
    finally:
        transport.close()


# -- the trials ---------------------------------------------------------------------------------
def trial_agent_kill(life: Lineage, rng: random.Random) -> dict[str, Any]:
    """SIGKILL the dock agent (`bodycam dock` in a subprocess) at a random moment."""
    with recorder(life) as rec:
        assert rec.modem is not None
        rec.modem.impair(up=SLOW_LINE)
        before = len(vault_snapshot(life.vault_dir, life.device_id))
        cmd = [sys.executable, "-m", "host_agent.cli", "dock", "--port", rec.port, "--vault",
               str(life.vault_dir), "--enroll-unknown", "--identity",
               str(life.base / "pki" / "fault-dock")]
        agent = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        # The agent takes ~0.4 s to start and ~0.6 s to offload on this line.
        delay = rng.uniform(0.3, 1.4)
        try:
            agent.wait(timeout=delay)
            outcome = "finished before the kill"
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
            outcome = "killed"
        stored_then = len(vault_snapshot(life.vault_dir, life.device_id)) - before
        check_freed_only_released(life, "after the agent kill")
        rec.modem.impair()
        report = redock(life, rec)
    check_all(life, "after the re-dock")
    return {"fault": "agent_kill", "at_s": round(delay, 3), "outcome": outcome,
            "stored_before_kill": stored_then, "stored_on_redock": report["offload"]["stored"]}


def trial_device_kill(life: Lineage, rng: random.Random) -> dict[str, Any]:
    """SIGKILL the recorder mid-offload (a power cut), reboot it on the same storage."""
    with recorder(life) as rec:
        assert rec.modem is not None
        rec.modem.impair(up=SLOW_LINE)
        transport = SerialTransport(rec.port)
        transport.open()
        delay = rng.uniform(0.0, 0.6)
        timer = threading.Timer(delay, rec.kill)
        try:
            with Vault.open(life.vault_dir) as vault:
                session = DockSession(transport, vault, life.authority[1],
                                      enroll_unknown=True, timeout=0.3)
                session.identify()
                session.sync_clock()
                timer.start()  # the power cut comes during the offload (or just after it)
                session.offload()
            outcome = "finished before the kill"
        except (SessionError, TransportError) as exc:
            outcome = f"killed: {type(exc).__name__}"
        finally:
            timer.cancel()
            if timer.is_alive():
                timer.join()
            rec.kill()
            transport.close()
        check_freed_only_released(life, "after the device kill")
    with recorder(life, segments=0) as rec:
        report = redock(life, rec)
    check_all(life, "after the reboot and re-dock")
    return {"fault": "device_kill", "at_s": round(delay, 3), "outcome": outcome,
            "stored_on_redock": report["offload"]["stored"]}


def trial_clock_jump(life: Lineage, rng: random.Random) -> dict[str, Any]:
    """The clock jumps: while off (reboot with another skew) and while docked (clock_adjust)."""
    skew = rng.choice([-1, 1]) * rng.randrange(1, 48 * 3600) * 1_000_000
    # rtc_lost: the sim's RTC keeps its setting across reboots (a good backup cell); the jump
    # while off is that setting lost, the clock restarting `skew` from true time
    with recorder(life, skew_us=skew, rtc_lost=True) as rec:
        transport = SerialTransport(rec.port)
        transport.open()
        try:
            with Vault.open(life.vault_dir) as vault:
                session = DockSession(transport, vault, life.authority[1], enroll_unknown=True)
                session.identify()
                jump = rng.choice([-1, 1]) * rng.randrange(1, 3600) * 1_000_000
                session.request("clock_adjust", delta_us=jump, uncertainty_us=0)
                report = dock(session).to_dict()
        finally:
            transport.close()
    check_all(life, "after the clock jumps")
    clock = report["clock"]
    truth_after = skew + jump + clock["stepped_us"]  # drift 0: the sim clock's true error
    if abs(clock["offset_before_us"] - (skew + jump)) > clock["bound_before_us"]:
        raise InvariantBroken(f"offset {clock['offset_before_us']} us outside its bound "
                              f"{clock['bound_before_us']} us of the true {skew + jump} us")
    if abs(truth_after) > clock["bound_before_us"]:
        raise InvariantBroken(f"clock off by {truth_after} us after the step, stated "
                              f"±{clock['bound_before_us']} us")
    return {"fault": "clock_jump", "skew_us": skew, "jump_us": jump,
            "error_after_us": truth_after, "bound_us": clock["bound_before_us"]}


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[None]:
    """A tmpfs of `size` at `path` (needs root); skips the test where it cannot be mounted."""
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs for the full-disk trial: {res.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def trial_disk_full(life: Lineage, rng: random.Random) -> dict[str, Any]:
    """The vault's disk fills up mid-offload; then space is freed and the dock retries.

    Runs on a recorder and vault of its own: the small disk is mounted where the vault goes.
    """
    life = Lineage(life.base / f"disk-full-{rng.randrange(1 << 32):08x}")
    with small_disk(life.vault_dir, "1m"):
        with recorder(life, segments=3) as rec:
            try:
                redock(life, rec)
                raise InvariantBroken("3 segments of 500 KB fit on a 1 MB disk?")
            except OSError as exc:  # the session lets ENOSPC through (see the report)
                if exc.errno != errno.ENOSPC:
                    raise
                error = f"OSError: {exc.strerror}"
            except (VaultError, SessionError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            check_freed_only_released(life, "with the disk full")
            stored_full = len(vault_snapshot(life.vault_dir, life.device_id))
            subprocess.run(["mount", "-o", "remount,size=64m", str(life.vault_dir)], check=True)
            report = redock(life, rec)
        check_all(life, "after space was freed")
    return {"fault": "disk_full", "outcome": error, "stored_while_full": stored_full,
            "stored_on_redock": report["offload"]["stored"]}


TRIALS = {
    "agent_kill": trial_agent_kill,
    "device_kill": trial_device_kill,
    "clock_jump": trial_clock_jump,
}


# -- the quick set ---------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_agent_killed_mid_offload_loses_and_duplicates_nothing(tmp_path: Path, seed: int) -> None:
    trial_agent_kill(Lineage(tmp_path), random.Random(seed))


def test_device_power_cut_mid_offload_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    life = Lineage(tmp_path)
    rng = random.Random(7)
    outcomes = [trial_device_kill(life, rng)["outcome"] for _ in range(3)]
    assert any(o.startswith("killed") for o in outcomes), outcomes


def test_clock_jumps_are_measured_and_corrected_within_the_stated_bound(tmp_path: Path) -> None:
    life = Lineage(tmp_path)
    rng = random.Random(11)
    for _ in range(2):
        trial_clock_jump(life, rng)


def test_vault_disk_full_frees_nothing_and_recovers(tmp_path: Path) -> None:
    life = Lineage(tmp_path)
    result = trial_disk_full(life, random.Random(5))
    assert result["stored_on_redock"], result
