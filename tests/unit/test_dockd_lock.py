"""One worker per recorder, wherever it is plugged in: the device lock is a kernel file lock,
held by one process at a time and released when that process dies, however it dies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from host_agent.dock.session import SessionError
from host_agent.dockd.slot import DeviceLock

REPO = Path(__file__).resolve().parents[2]
HOLD = ("import sys, time; from host_agent.dockd.slot import DeviceLock;"
        " lock = DeviceLock(sys.argv[1], 'SIM-1'); print('held', flush=True); time.sleep(60)")


def test_a_second_slot_cannot_take_a_recorder_another_process_serves(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(SessionError, match="SIM-1 is being docked in another slot"):
            DeviceLock(str(tmp_path), "SIM-1")
        DeviceLock(str(tmp_path), "SIM-2")  # another recorder is free
    finally:
        holder.kill()  # a worker killed outright: the kernel lets the lock go
        holder.wait()
    DeviceLock(str(tmp_path), "SIM-1")
