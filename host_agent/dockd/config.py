"""The daemon's configuration: one TOML file, every key known, every value checked.

    [dock]
    identity = "/etc/bodycam/dock"        the dock's key and unit certificate
    vault = "/var/lib/bodycam/vault"      an existing vault (`bodycam enroll` makes it)
    state_dir = "/run/bodycam"            where each slot's state is kept (`bodycam status`)
    policy = "/etc/bodycam/policy.cose"   the unit's signed policy (optional): delivered to
                                          every recorder; its thresholds decide readiness
    enroll_unknown = false                trust a new recorder on first sight (lab use only)
    recheck_s = 60                        while a recorder is not ready (charging), how often
                                          its clock is synced and its readiness checked again
    timeout_s = 20                        a request the recorder does not answer in this long
                                          fails the docking (the recorder is docked again)

    [serial]
    watch = ["/dev/serial/by-id/*"]       glob patterns of ports to serve as they appear
    ignore = []                           glob patterns never to open (a modem, a GPS)
    baudrate = 921600
    poll_s = 1.0                          how often the patterns are looked at (udev events,
                                          where pyudev is installed, wake the look at once)

    [mqtt]                                optional: recorders on Wi-Fi / LTE
    broker = "127.0.0.1:1883"             a recorder is served when its retained status topic
    ca = "", cert = "", key = ""          says "online"; TLS files as for `bodycam dock`
    user = "", password_file = ""

A key the daemon does not know, a value of the wrong type, a vault that is not one: `ConfigError`
naming the file and line.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A configuration the daemon cannot run with; the message names the file and line."""


@dataclass(frozen=True)
class MqttConfig:
    host: str
    port: int
    ca: str = ""
    cert: str = ""
    key: str = ""
    user: str = ""
    password_file: str = ""


@dataclass(frozen=True)
class Config:
    path: str
    identity: str
    vault: str
    state_dir: str
    policy: str = ""
    enroll_unknown: bool = False
    recheck_s: float = 60.0
    timeout_s: float = 20.0
    watch: tuple[str, ...] = ("/dev/serial/by-id/*",)
    ignore: tuple[str, ...] = ()
    baudrate: int = 921600
    poll_s: float = 1.0
    mqtt: MqttConfig | None = None


# section -> key -> (type, default); None default: required
_SCHEMA: dict[str, dict[str, tuple[type | tuple[type, ...], Any]]] = {
    "dock": {"identity": (str, None), "vault": (str, None), "state_dir": (str, None),
             "policy": (str, ""), "enroll_unknown": (bool, False),
             "recheck_s": ((int, float), 60.0), "timeout_s": ((int, float), 20.0)},
    "serial": {"watch": (list, ["/dev/serial/by-id/*"]), "ignore": (list, []),
               "baudrate": (int, 921600), "poll_s": ((int, float), 1.0)},
    "mqtt": {"broker": (str, None), "ca": (str, ""), "cert": (str, ""), "key": (str, ""),
             "user": (str, ""), "password_file": (str, "")},
}
_RANGES = {"recheck_s": (1, 86400), "timeout_s": (1, 600), "baudrate": (1200, 12_000_000),
           "poll_s": (0.05, 60)}


def _line_of(text: str, section: str, key: str | None) -> int:
    """The line where `key` of `[section]` is set (or the section starts), 1-based; 0 if
    not found."""
    current = ""
    for n, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        m = re.fullmatch(r"\[\s*([A-Za-z0-9_.-]+)\s*\]\s*(#.*)?", stripped)
        if m:
            current = m.group(1)
            if key is None and current == section:
                return n
            continue
        if current == section and key is not None and re.match(
                rf"{re.escape(key)}\s*=", stripped):
            return n
    return 0


def load(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not TOML: {exc}") from None

    def where(section: str, key: str | None = None) -> str:
        line = _line_of(text, section, key)
        return f"{path}:{line}" if line else str(path)

    values: dict[str, dict[str, Any]] = {}
    for section, body in doc.items():
        if section not in _SCHEMA:
            raise ConfigError(f"{where(section)}: unknown section [{section}] (known:"
                              f" {', '.join(_SCHEMA)})")
        if not isinstance(body, dict):
            raise ConfigError(f"{where(section, section)}: {section} must be a [section]")
        values[section] = {}
        for key, value in body.items():
            if key not in _SCHEMA[section]:
                raise ConfigError(f"{where(section, key)}: unknown key {key!r} in [{section}]"
                                  f" (known: {', '.join(_SCHEMA[section])})")
            kind = _SCHEMA[section][key][0]
            if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
                names = kind.__name__ if isinstance(kind, type) else " or ".join(
                    k.__name__ for k in kind)
                raise ConfigError(f"{where(section, key)}: {key} must be {names}, not"
                                  f" {type(value).__name__} {value!r}")
            if isinstance(value, list) and not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where(section, key)}: {key} must be a list of strings")
            if key in _RANGES and isinstance(value, int | float) and not (
                    _RANGES[key][0] <= value <= _RANGES[key][1]):
                lo, hi = _RANGES[key]
                raise ConfigError(f"{where(section, key)}: {key} = {value} is not within"
                                  f" {lo}..{hi}")
            values[section][key] = value
    for section in ("dock", "serial"):
        values.setdefault(section, {})
    for section, keys in _SCHEMA.items():
        if section not in values:
            continue
        for key, (_, default) in keys.items():
            if key not in values[section]:
                if default is None:
                    raise ConfigError(f"{where(section)}: [{section}] needs {key}")
                values[section][key] = default
    base = path.parent
    dock, serial = values["dock"], values["serial"]

    def resolve(value: str) -> str:
        return str((base / value).resolve()) if value else ""

    mqtt = None
    if "mqtt" in values:
        m = values["mqtt"]
        host, sep, port = m["broker"].rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{where('mqtt', 'broker')}: broker {m['broker']!r} is not"
                              " HOST:PORT")
        mqtt = MqttConfig(host or "127.0.0.1", int(port), resolve(m["ca"]), resolve(m["cert"]),
                          resolve(m["key"]), m["user"], resolve(m["password_file"]))
    cfg = Config(path=str(path.resolve()), identity=resolve(dock["identity"]),
                 vault=resolve(dock["vault"]), state_dir=resolve(dock["state_dir"]),
                 policy=resolve(dock["policy"]), enroll_unknown=dock["enroll_unknown"],
                 recheck_s=float(dock["recheck_s"]), timeout_s=float(dock["timeout_s"]),
                 watch=tuple(serial["watch"]), ignore=tuple(serial["ignore"]),
                 baudrate=serial["baudrate"], poll_s=float(serial["poll_s"]), mqtt=mqtt)
    _check_paths(cfg, where)
    return cfg


def _check_paths(cfg: Config, where: Any) -> None:
    vault = Path(cfg.vault)
    if not (vault / "vault.sqlite").is_file():
        raise ConfigError(f"{where('dock', 'vault')}: {cfg.vault} is not a vault (make it with"
                          " `bodycam enroll`)")
    if cfg.policy and not Path(cfg.policy).is_file():
        raise ConfigError(f"{where('dock', 'policy')}: no policy file {cfg.policy}")
    if not Path(cfg.identity).is_dir():
        raise ConfigError(f"{where('dock', 'identity')}: {cfg.identity} is not a dock identity"
                          " directory")
