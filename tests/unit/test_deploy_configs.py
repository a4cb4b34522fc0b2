"""The shipped configuration files are read by the code that runs them: a key renamed in the
code, or a typo in a shipped file, fails here rather than on a unit's machine."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from host_agent import settings
from host_agent.central import config as central_config
from host_agent.dockd import config as dock_config


def shipped(*parts: str) -> str:
    return (resources.files("host_agent") / "deploy").joinpath(*parts).read_text()


def test_the_shipped_dock_toml_has_only_known_keys(tmp_path: Path) -> None:
    path = tmp_path / "dock.toml"
    path.write_text(shipped("dockd", "dock.toml"))
    values, _ = settings.read(path, dock_config._SCHEMA, dock_config._RANGES)
    assert set(values) == {"dock", "serial", "mqtt", "central"}
    with pytest.raises(settings.SettingsError, match="is not a vault"):
        dock_config.load(path)  # /var/lib/bodycam/vault does not exist here: named, no trace


def test_a_dock_with_credentials_for_the_store_is_refused(tmp_path: Path) -> None:
    """The central hands out an upload per segment: a dock that still holds the store's
    credentials could put other versions over any evidence, so its config is refused."""
    path = tmp_path / "dock.toml"
    path.write_text(shipped("dockd", "dock.toml") + '\n[store]\nendpoint = "http://s3"\n'
                    'bucket = "evidence"\naccess_key = "dock"\nsecret_key_file = "s3.secret"\n')
    with pytest.raises(settings.SettingsError, match="holds no credentials"):
        dock_config.load(path)


def test_the_shipped_central_toml_loads(tmp_path: Path) -> None:
    path = tmp_path / "central.toml"
    path.write_text(shipped("central", "central.toml"))
    cfg = central_config.load(path)
    assert cfg.port == 8470 and cfg.store.bucket == "evidence" and cfg.store.retention_days == 183


@pytest.mark.parametrize(("unit", "command"), [
    (("dockd", "bodycam-dockd.service"), "dockd"),
    (("central", "bodycam-central.service"), "central"),
])
def test_the_unit_files_run_a_command_bodycam_has(unit: tuple[str, str], command: str) -> None:
    import shlex

    from host_agent.cli import build_parser

    (line,) = [ln for ln in shipped(*unit).splitlines() if ln.startswith("ExecStart=")]
    argv = shlex.split(line.removeprefix("ExecStart="))
    assert argv[0].endswith("/bodycam")
    args = build_parser().parse_args(argv[1:])  # argparse exits on anything it does not know
    assert args.command == command and args.log_json and args.config.endswith(".toml")
