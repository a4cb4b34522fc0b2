"""Install the firmware build on a board over its REPL, copying only what changed.

The board keeps the build next to its own files: device/ and protocol/ as .mpy, and
`firmware.json`, the version file: {"format", "version" (FIRMWARE_VERSION, what `identify`
and every record report), "build" (the id of the build's manifest), "files" (each path with
its SHA-256)}. What is copied is decided by what the board really holds, not by what the
version file says: the board hashes its files (one small script), and every file whose hash
differs from the build's is copied, every file under device/ or protocol/ that is not in the
build is removed (a stale module would still be imported), and then the board hashes them
again. The version file is removed before the first change and written after the check, so a
deploy cut short leaves no claim that a build is installed, and the next one finishes it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from host_agent.firmware.board import Board, BoardError
from host_agent.firmware.build import (
    PACKAGES,
    SOURCE_ROOT,
    build_id,
    cached_build,
    compile_firmware,
    firmware_version,
    manifest,
)

VERSION_FILE = "firmware.json"
FORMAT = 1

# Runs on the board: the SHA-256 of every file under the firmware's folders, the folders, the
# version file, and the .mpy version its MicroPython reads. Prints one JSON line.
_STATE = """
import os, sys, hashlib, binascii, json
def _bc_walk(d, files, dirs):
    try:
        entries = list(os.ilistdir(d))
    except OSError:
        return
    dirs.append(d)
    for e in entries:
        p = d + '/' + e[0]
        if e[1] == 0x4000:
            _bc_walk(p, files, dirs)
            continue
        h = hashlib.sha256()
        f = open(p, 'rb')
        while True:
            b = f.read(1024)
            if not b:
                break
            h.update(b)
        f.close()
        files[p] = binascii.hexlify(h.digest()).decode()
_bc_f = {}
_bc_d = []
for _bc_p in %(packages)r:
    _bc_walk(_bc_p, _bc_f, _bc_d)
try:
    f = open(%(version_file)r)
    _bc_v = json.loads(f.read())
    f.close()
except (OSError, ValueError):
    _bc_v = None
print(json.dumps({'files': _bc_f, 'dirs': _bc_d, 'version': _bc_v,
                  'mpy': getattr(sys.implementation, '_mpy', 0) & 0xff}))
del _bc_walk, _bc_f, _bc_d, _bc_v, _bc_p
"""


@dataclass
class Installed:
    """What a board reports it holds: its version file, and whether its files match it."""

    version: str
    build: str
    intact: bool  # the files on the board are exactly the ones the version file lists

    @classmethod
    def of(cls, state: dict[str, Any]) -> Installed | None:
        v = state.get("version")
        if not isinstance(v, dict) or not isinstance(v.get("files"), dict):
            return None
        return cls(str(v.get("version", "")), str(v.get("build", "")),
                   v["files"] == state.get("files"))


@dataclass
class DeployResult:
    port: str
    version: str  # FIRMWARE_VERSION of the build now installed
    build: str  # its build id
    before: Installed | None  # what the board held before (None: no version file)
    copied: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    bytes: int = 0  # bytes copied (with dry_run: to copy)
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _board_state(board: Board) -> dict[str, Any]:
    state = board.run_json(_STATE % {"packages": list(PACKAGES), "version_file": VERSION_FILE},
                           "listing the installed firmware")
    if not isinstance(state, dict) or not isinstance(state.get("files"), dict):
        raise BoardError(f"{board.port}: listing the installed firmware: unexpected answer")
    return state


def _parents(path: str) -> list[str]:
    """The folders above a relative path, outermost first: a/b/c.mpy -> [a, a/b]."""
    parts = path.split("/")[:-1]
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _check_mpy(board: Board, state: dict[str, Any], build: Path, files: dict[str, str]) -> None:
    """Refuse a build the board's MicroPython cannot import (another .mpy version)."""
    wanted = int(state.get("mpy") or 0)
    first = build / next(iter(files))
    have = first.read_bytes()[:2]
    if wanted and (len(have) < 2 or have[1] != wanted):
        raise BoardError(f"{board.port}: the board's MicroPython imports .mpy version {wanted},"
                         f" this build is version {have[1] if len(have) > 1 else '?'}"
                         " (mpy-cross of another MicroPython release)")


def deploy(port: str, build_dir: Path | None = None, *, dry_run: bool = False,
           root: Path = SOURCE_ROOT) -> DeployResult:
    """Build the firmware (into `build_dir`, or the cached build) and install it on the board
    at `port`. BoardError or FirmwareError, each one line, when it cannot."""
    if build_dir is None:
        build = cached_build(root)
    else:
        build = Path(build_dir)
        compile_firmware(build, root)
    files = manifest(build, root)
    version, bid = firmware_version(root), build_id(files)
    with Board(port) as board:
        state = _board_state(board)
        _check_mpy(board, state, build, files)
        held: dict[str, str] = state["files"]
        copy = [p for p in files if held.get(p) != files[p]]
        remove = sorted(p for p in held if p not in files)
        result = DeployResult(port, version, bid, Installed.of(state), copy, remove,
                              len(files) - len(copy),
                              sum((build / p).stat().st_size for p in copy), dry_run)
        record = {"format": FORMAT, "version": version, "build": bid, "files": files}
        if dry_run or (not copy and not remove and state.get("version") == record):
            return result
        if state.get("version") is not None:
            board.run(f"import os\nos.remove({VERSION_FILE!r})", "removing the version file")
        dirs = set(state.get("dirs") or [])
        for path in copy:
            for folder in _parents(path):
                if folder not in dirs:
                    board.run(f"import os\nos.mkdir({folder!r})", f"making {folder}")
                    dirs.add(folder)
            board.write_file(path, (build / path).read_bytes())
        for path in remove:
            board.run(f"import os\nos.remove({path!r})", f"removing {path}")
        needed = {folder for path in files for folder in _parents(path)}
        for folder in sorted(dirs - needed, key=lambda d: -d.count("/")):
            board.run(f"import os\ntry:\n os.rmdir({folder!r})\nexcept OSError:\n pass",
                      f"removing {folder}")
        after = _board_state(board)["files"]
        wrong = sorted(p for p in set(files) | set(after) if files.get(p) != after.get(p))
        if wrong:
            raise BoardError(f"{port}: after the copy the board's files differ from the build:"
                             f" {', '.join(wrong[:5])}{' …' if len(wrong) > 5 else ''}")
        board.write_file(VERSION_FILE, json.dumps(record, sort_keys=True).encode())
    return result

