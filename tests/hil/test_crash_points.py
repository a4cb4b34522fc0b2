"""Every crash point of the recorder's writes is safe, on littlefs, FAT and a host directory.

tests/mpy/crash_points.py runs inside MicroPython: a scenario (first boot, key generation,
commissioning, a clock step, the pre-event ring, recording, a continuous phase with events,
a policy adoption, releases with receipts until nothing is left) on a card in RAM (VfsLfs2,
VfsFat) or a host directory (VfsPosix); for each crash point (each block write, each file
operation) it reboots the recorder on the card as the cut left it and checks the chain, the
records durable before the cut, the data, the phase, the receipts (see its docstring).

Here, for all three file systems: the whole enumeration (plus, for every 25th crash point, a
second cut at each write of its recovery; and on littlefs and FAT, two crash points re-run
from scratch to show that replaying the write log is running to that write), then real
dockings of a few crashed cards: the simulated board boots the firmware from the card image
(or directory) and the dock offloads it into a vault that already holds what was released
before the cut. Every record durable before the cut must be in the vault, nothing
quarantined, the vault verifies.

tools/crash_points.py runs the same with dockings of as many points as asked.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from host_agent.dock.session import DockSession, dock
from host_agent.keys import DockIdentity, UnitKey
from host_agent.lab.simulator import SimConfig, SimulatedRecorder
from host_agent.lab.unit import lab_unit
from host_agent.transport.serial import SerialTransport
from host_agent.vault import Vault, ingest, timeline
from protocol import policy
from tests.hil.conftest import HEAPSIZE
from tests.micropython_runner import run_micropython

pytestmark = pytest.mark.simulator

FILE_SYSTEMS = ("lfs2", "fat", "posix")
DOCKED_PER_FS = 3  # crash points docked per file system in the quick set
DOUBLE_EVERY = 25  # every so many crash points, a second cut at each write of the recovery


@dataclass
class Enumeration:
    fs: str
    points: int
    checked: int
    lost: int
    quarantined: int
    problems: int
    seconds: float
    result: dict[str, Any]
    output: str


def enumerate_points(fs: str, work: Path, unit: UnitKey, dump: Path | None = None,
                     every: int = 1, double: int = 0, rerun: int = 0,
                     extra: tuple[str, ...] = ()) -> Enumeration:
    """Run tests/mpy/crash_points.py for one file system (dumping every `every`-th crashed
    card to `dump`; every `double`-th crash point also cut again at each write of its
    recovery; `rerun` points re-run from scratch to check the replay); the recorder is
    commissioned to `unit`, which signs the policy it adopts."""
    work.mkdir(parents=True, exist_ok=True)
    signed = work / "policy.cose"
    doc = policy.annex()
    doc["version"] = 2
    doc["unit"] = "crash points"
    signed.write_bytes(policy.sign(doc, unit.kid, unit.sign))
    args = [fs, "--work", str(work / "mpy"), "--unit-pub", unit.public.hex(),
            "--policy", str(signed), "--double", str(double), "--rerun", str(rerun), *extra]
    if dump is not None:
        args += ["--dump", str(dump), "--every", str(every)]
    proc = run_micropython("tests/mpy/crash_points.py", *args, heapsize="64m", timeout=900)
    out = proc.stdout + proc.stderr
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert proc.returncode == 0 and line, out[-4000:]
    result: dict[str, Any] = {}
    for item in line.split()[1:]:
        key, _, value = item.partition("=")
        result[key] = value if key == "fs" else float(value) if "." in value else int(value)
    return Enumeration(fs, result["points"], result["checked"], result["lost"],
                       result["quarantined"], result["problems"], result["seconds"], result,
                       out)


@dataclass
class Docking:
    point: int
    durable: int
    stored: int
    lost: list[int]
    quarantined: int
    problems: list[str]
    gaps: list[dict[str, Any]]
    seconds: float


def dock_point(fs: str, dump: Path, point: dict[str, Any], info: dict[str, Any], work: Path,
               unit: UnitKey, identity: DockIdentity) -> Docking:
    """Boot the simulated recorder from one crashed card, dock it, check the vault."""
    t0 = time.monotonic()
    n = int(point["n"])
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    device_id, public = info["device_id"], bytes.fromhex(info["public_key"])
    with Vault.open(work / "vault") as vault:
        # The vault already holds what the recorder released before the cut: it was released
        # only once the vault held it. (A cut before the first record may come before the key
        # was written: the recorder makes another at boot, enrolled on first sight.)
        enrolled = bool(point["durable"] or point["released"])
        if enrolled:
            vault.enroll(device_id, public, by="crash-points")
        for seq in sorted(point["released"]):
            intake = vault.intake(device_id)
            record = (dump / "released" / f"{seq:08d}.cose").read_bytes()
            data = (dump / "released" / f"{seq:08d}.bin").read_bytes()
            outcome = intake.offer(seq, record, data or None)
            assert outcome.status == ingest.STORED, outcome
        cfg = SimConfig(segments=0, segment_ms=400, bitrate=1_000_000, heapsize=HEAPSIZE,
                        unit_key=unit.public.hex(), skew_us=0, drift_ppm=0)
        storage = work / "card"
        if fs == "posix":
            shutil.copytree(dump / f"posix-{n:05d}", storage)
        else:
            image = work / "card.img"
            shutil.copyfile(dump / f"{fs}-{n:05d}.img", image)
            cfg.card_image, cfg.card_fs = str(image), fs
        rec = SimulatedRecorder(storage, cfg, work / "device.log").start()
        try:
            rec.wait_for("ready for the dock", timeout=60)
            transport = SerialTransport(rec.port)
            transport.open()
            try:
                session = DockSession(transport, vault, identity, enroll_unknown=not enrolled)
                report = dock(session)
            finally:
                transport.close()
        except BaseException:
            print(rec.log_text()[-4000:])
            raise
        finally:
            rec.stop()
        held = {int(r["seq"]): bytes(r["record_sha256"])  # type: ignore[call-overload]
                for r in vault.records(device_id)}
        lost = [int(seq) for seq, digest in point["durable"]
                if held.get(int(seq)) != bytes.fromhex(digest)]
        problems = [str(p.__dict__) for p in vault.verify()]
        quarantined = len(vault.quarantined(device_id))
        gaps = [r for r in timeline.load_records(vault, device_id) if r["kind"] == "gap"]
    return Docking(n, len(point["durable"]), len(report.offload["stored"]), lost, quarantined,
                   problems, gaps, time.monotonic() - t0)


def chosen(points: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """k points spread over the scenario, the same every run."""
    if len(points) <= k:
        return points
    return [points[(i + 1) * len(points) // (k + 1)] for i in range(k)]


@pytest.mark.parametrize("fs", FILE_SYSTEMS)
def test_every_crash_point_recovers_and_docks_losing_nothing(tmp_path: Path, fs: str) -> None:
    unit, identity = lab_unit(tmp_path / "pki", "crash-dock")
    dump = tmp_path / "dump"
    e = enumerate_points(fs, tmp_path / "work", unit, dump, every=7, double=DOUBLE_EVERY,
                         rerun=0 if fs == "posix" else 2)
    print(e.output[-3000:])
    assert (e.lost, e.quarantined, e.problems) == (0, 0, 0), e.output[-4000:]
    assert e.checked >= 200, e.result  # a crash point per write, not a sample
    assert e.result["double"] >= 50, e.result  # and cuts within the recoveries
    if fs != "posix":  # replaying the write log is running the scenario to that write
        assert e.output.count("holds the replayed files") == 2, e.output[-2000:]
    # The scenario went through the recoveries that matter: truncated segments salvaged,
    # gaps signed, phases resumed (and on FAT the twin names a cut rename leaves, repaired).
    assert e.result["gaps"] > 50 and e.result["truncated"] > 50 and e.result["resumed"] > 20
    if fs == "fat":
        assert e.result["twins"] > 0
    info = json.loads((dump / f"{fs}.json").read_text())
    for point in chosen(info["points"], DOCKED_PER_FS):
        d = dock_point(fs, dump, point, info, tmp_path / f"dock-{point['n']}", unit, identity)
        assert d.lost == [] and d.quarantined == 0 and d.problems == [], d
        assert len(d.gaps) <= 1, d
