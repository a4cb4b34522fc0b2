"""Bad input to `bodycam` gets a clear message and exit status 2, never a traceback, and leaves
nothing behind (no empty vault, no half-written file). Each case runs the real command in a
subprocess, as a person would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from host_agent.lab.unit import lab_unit

REPO = Path(__file__).resolve().parents[2]


def bodycam(*args: str, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "host_agent.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env=env)


def refused(proc: subprocess.CompletedProcess[str], *words: str, status: int = 2) -> None:
    assert proc.returncode == status, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    for w in words:
        assert w in proc.stderr, (w, proc.stderr)


@pytest.fixture
def identity(tmp_path: Path) -> str:
    lab_unit(tmp_path / "pki")
    return str(tmp_path / "pki" / "lab-dock")


def test_dock_on_a_file_or_a_folder_that_is_no_vault(tmp_path: Path, identity: str) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    refused(bodycam("dock", "--identity", identity, "--port", "/dev/null", "--vault",
                    str(a_file), "--enroll-unknown"), "is a file")
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"x")
    refused(bodycam("dock", "--identity", identity, "--port", "/dev/null", "--vault",
                    str(folder)), "not a vault")
    refused(bodycam("dock", "--identity", identity, "--port", "/dev/null", "--vault",
                    str(folder), "--enroll-unknown"), "not empty and not a vault")
    assert sorted(p.name for p in folder.iterdir()) == ["a.jpg"]


def test_a_refused_dock_leaves_no_empty_vault(tmp_path: Path, identity: str) -> None:
    refused(bodycam("dock", "--identity", identity, "--port", str(tmp_path / "no-tty"),
                    "--vault", str(tmp_path / "v"), "--enroll-unknown"), "cannot open")
    assert not (tmp_path / "v").exists()
    refused(bodycam("dock", "--identity", identity, "--port", str(tmp_path / "no-tty"),
                    "--vault", str(tmp_path / "w")), "not a vault")
    assert not (tmp_path / "w").exists()


def test_an_unwritable_parent_and_a_read_only_vault(tmp_path: Path, identity: str) -> None:
    parent = tmp_path / "locked"
    parent.mkdir()
    mounted = False
    if os.geteuid() == 0:  # root writes through permission bits: use a read-only mount
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,ro", "tmpfs", str(parent)],
                          capture_output=True).returncode != 0:
            pytest.skip("cannot mount a read-only tmpfs here")
        mounted = True
    else:
        parent.chmod(0o555)
    try:
        refused(bodycam("enroll", "--identity", identity, "--vault", str(parent / "v"),
                        "--device-id", "SIM-1", "--public-key", "00" * 32),
                "cannot create a vault")
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(parent)], capture_output=True)
        else:
            parent.chmod(0o755)


def test_mqtt_nonsense_and_missing_companions(tmp_path: Path, identity: str) -> None:
    refused(bodycam("dock", "--identity", identity, "--mqtt", "nonsense", "--device", "X",
                    "--vault", str(tmp_path / "v")), "is not HOST:PORT")
    refused(bodycam("dock", "--identity", identity, "--mqtt", "host:99999", "--device", "X",
                    "--vault", str(tmp_path / "v")), "is not HOST:PORT")
    refused(bodycam("dock", "--identity", identity, "--mqtt", "127.0.0.1:1883",
                    "--vault", str(tmp_path / "v")), "needs --device")
    assert not (tmp_path / "v").exists()


def test_policy_sign_into_a_missing_folder_and_with_a_bad_key(tmp_path: Path) -> None:
    unit = tmp_path / "unit"
    assert bodycam("unit", "keygen", "--out", str(unit)).returncode == 0
    template = bodycam("policy", "template").stdout
    (tmp_path / "p.json").write_text(template)
    refused(bodycam("policy", "sign", str(tmp_path / "p.json"), "--key", str(unit / "unit.key"),
                    "--out", str(tmp_path / "no" / "such" / "p.cose")), "does not exist")
    (tmp_path / "bad.key").write_bytes(b"short")
    refused(bodycam("policy", "sign", str(tmp_path / "p.json"), "--key",
                    str(tmp_path / "bad.key"), "--out", str(tmp_path / "p.cose")))
    (tmp_path / "broken.json").write_text("{not json")
    refused(bodycam("policy", "sign", str(tmp_path / "broken.json"), "--key",
                    str(unit / "unit.key"), "--out", str(tmp_path / "p.cose")))
    assert not (tmp_path / "p.cose").exists()
    refused(bodycam("unit", "keygen", "--out", str(unit)), "never overwritten")


def test_a_dock_without_a_usable_identity(tmp_path: Path) -> None:
    refused(bodycam("dock", "--identity", str(tmp_path / "none"), "--port", "/dev/null",
                    "--vault", str(tmp_path / "v")), "not a dock identity directory")
    lab_unit(tmp_path / "pki")
    (tmp_path / "pki" / "lab-dock" / "dock.cert").write_bytes(b"garbage")
    refused(bodycam("dock", "--identity", str(tmp_path / "pki" / "lab-dock"), "--port",
                    "/dev/null", "--vault", str(tmp_path / "v")), "dock.cert")
    assert not (tmp_path / "v").exists()


def test_enroll_asks_for_the_fingerprint(tmp_path: Path, identity: str) -> None:
    refused(bodycam("enroll", "--identity", identity, "--port", "/dev/null", "--vault",
                    str(tmp_path / "v")), "--expect-fingerprint", "--trust-on-first-use")
    assert not (tmp_path / "v").exists()


def test_sim_storage_on_a_file_and_bad_unit_keys(tmp_path: Path) -> None:
    (tmp_path / "card").write_text("x")
    refused(bodycam("sim", "--storage", str(tmp_path / "card")), "is a file")
    refused(bodycam("sim", "--unit-key", "zz", "--storage", str(tmp_path / "s")),
            "neither 64 hex digits nor a readable key file")
    refused(bodycam("sim", "--segments", "-3"), "not within")


def test_sim_exits_non_zero_when_the_firmware_dies_at_boot(tmp_path: Path) -> None:
    storage = tmp_path / "card"
    storage.mkdir()
    (storage / "device.key").write_bytes(b"damaged")  # not a 32-byte seed
    refused(bodycam("sim", "--storage", str(storage), "--segments", "0"), "did not start",
            status=1)


def test_demo_without_micropython_says_how_to_get_it(tmp_path: Path) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    env = dict(os.environ, PATH=str(bare))  # no micropython anywhere on PATH
    assert shutil.which("micropython", path=str(bare)) is None
    refused(bodycam("demo", "--dir", str(tmp_path / "d"), env=env), "micropython")
