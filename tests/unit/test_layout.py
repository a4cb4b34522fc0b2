"""The tree's import rules, checked: each folder is one part of the system and imports run one
way (lab → dock/vault/transport → protocol; device boards → device core → protocol).

Two kinds of check: what a fresh interpreter really loads (`sys.modules`), and what each
source file imports (its AST), so that an import hidden inside a function counts too.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.micropython_runner import REPO, run_micropython


def loaded_after(code: str) -> list[str]:
    """The modules of ours a fresh CPython has loaded after running `code`."""
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout
    return [m for m in json.loads(out) if m.split(".")[0] in ("host_agent", "device", "tests")]


def imports_of(path: Path) -> set[str]:
    """Every module a source file imports, at any depth of its code."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def sources(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


@pytest.mark.parametrize("code", [
    "import host_agent.dock, host_agent.vault, host_agent.transport",
    "import host_agent.dock.many, host_agent.transport.mqtt",
    "from host_agent.cli import build_parser; build_parser()",
])
def test_the_dock_agent_loads_nothing_of_the_lab_rig(code: str) -> None:
    assert [m for m in loaded_after(code) if m.startswith("host_agent.lab")] == []


def test_dock_commands_never_import_the_lab_rig(tmp_path: Path) -> None:
    """`bodycam dock` on a dock PC: parsing and running it imports no lab module."""
    from host_agent.lab.unit import lab_unit

    lab_unit(tmp_path / "pki", "dock-1")  # made here, in the test process: not the probe's
    code = ("from host_agent.cli import main\n"
            "import contextlib, io\n"
            "with contextlib.redirect_stderr(io.StringIO()):\n"
            f"    assert main(['dock', '--identity', '{tmp_path}/pki/dock-1', '--port',"
            f" '{tmp_path}/no-tty', '--enroll-unknown', '--vault', '{tmp_path}/v']) == 2\n")
    assert [m for m in loaded_after(code) if m.startswith("host_agent.lab")] == []
    assert not (tmp_path / "v").exists()  # a refused dock leaves no empty vault behind


@pytest.mark.parametrize("folder", ["host_agent/dock", "host_agent/vault", "host_agent/transport",
                                    "host_agent/custody", "host_agent/dockd",
                                    "host_agent/firmware", "host_agent/central", "protocol"])
def test_agent_parts_import_no_lab_and_no_cli(folder: str) -> None:
    for path in sources(folder):
        bad = {m for m in imports_of(path)
               if m.startswith(("host_agent.lab", "host_agent.cli", "tests"))}
        assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"


def test_the_vault_and_transports_do_not_import_the_dock() -> None:
    for folder in ("host_agent/vault", "host_agent/transport"):
        for path in sources(folder):
            bad = {m for m in imports_of(path) if m.startswith("host_agent.dock")}
            assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"


def test_the_vault_knows_nothing_of_the_records_office_above_it() -> None:
    """custody → vault, never back: the vault keeps the register's rows, the custody package
    decides what they mean; and the records office needs neither docking nor transports."""
    for path in sources("host_agent/vault"):
        bad = {m for m in imports_of(path) if m.startswith("host_agent.custody")}
        assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"
    for path in sources("host_agent/custody"):
        bad = {m for m in imports_of(path)
               if m.startswith(("host_agent.dock", "host_agent.transport"))}
        assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"


def test_protocol_imports_only_protocol() -> None:
    for path in sources("protocol"):
        ours = {m for m in imports_of(path) if m.split(".")[0] in ("host_agent", "device")}
        assert not ours, f"{path.relative_to(REPO)} imports {sorted(ours)}"


def test_the_device_core_imports_no_board() -> None:
    core = [p for p in sources("device") if "boards" not in p.relative_to(REPO).parts]
    assert core, "no device core found"
    for path in core:
        boards = {m for m in imports_of(path) if m.startswith("device.boards")}
        assert not boards, f"{path.relative_to(REPO)} imports {sorted(boards)}"


def test_the_device_core_loads_no_board_inside_micropython(tmp_path: Path) -> None:
    core = sorted(".".join(p.relative_to(REPO).with_suffix("").parts)
                  for p in sources("device")
                  if "boards" not in p.parts and p.name != "__init__.py")
    script = tmp_path / "probe.py"
    script.write_text(
        "import sys\n"
        f"for name in {core!r}:\n"
        "    __import__(name)\n"
        "print('BOARDS', [m for m in sys.modules if m.startswith('device.boards')])\n")
    proc = run_micropython(script)
    assert proc.returncode == 0, proc.stderr
    assert "BOARDS []" in proc.stdout, proc.stdout


def test_the_const_fallback_has_one_home() -> None:
    homes = [p.relative_to(REPO).as_posix() for folder in ("device", "protocol")
             for p in sources(folder) if "def const(" in p.read_text()]
    assert homes == ["protocol/compat.py"]


def test_deploy_files_are_package_data() -> None:
    from importlib import resources

    conf = resources.files("host_agent") / "deploy" / "mosquitto" / "mosquitto.conf"
    assert "listener" in conf.read_text()
