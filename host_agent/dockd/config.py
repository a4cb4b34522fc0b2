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

    [central]                             optional: forward the vault to the central tier
    url = "https://central.example:8470"  (host_agent/central/), every interval_s; segments
    interval_s = 60                       go to its store with the uploads it hands out
                                          (a [store] section, store credentials on the dock,
                                          is refused: the dock needs none)
    ca = ""                               the CA of the central's TLS certificate (PEM;
                                          default: the system's)

    [mqtt]                                optional: recorders on Wi-Fi / LTE
    broker = "127.0.0.1:1883"             a recorder is served when its retained status topic
    ca = "", cert = "", key = ""          says "online"; TLS files as for `bodycam dock`
    user = "", password_file = ""

A key the daemon does not know, a value of the wrong type, a vault that is not one: `ConfigError`
naming the file and line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from host_agent import settings
from host_agent.central import config as central_config

ConfigError = settings.SettingsError


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
    central_url: str = ""  # forward the vault there
    central_ca: str = ""  # the CA its TLS certificate is checked against ("": the system's)
    forward_s: float = 60.0


_SCHEMA: settings.Schema = {
    "dock": {"identity": (str, None), "vault": (str, None), "state_dir": (str, None),
             "policy": (str, ""), "enroll_unknown": (bool, False),
             "recheck_s": ((int, float), 60.0), "timeout_s": ((int, float), 20.0)},
    "serial": {"watch": (list, ["/dev/serial/by-id/*"]), "ignore": (list, []),
               "baudrate": (int, 921600), "poll_s": ((int, float), 1.0)},
    "mqtt": {"broker": (str, None), "ca": (str, ""), "cert": (str, ""), "key": (str, ""),
             "user": (str, ""), "password_file": (str, "")},
    "central": {"url": (str, None), "interval_s": ((int, float), 60.0), "ca": (str, "")},
    "store": central_config.STORE,
}
_RANGES: dict[str, tuple[float, float]] = {
    "recheck_s": (1, 86400), "timeout_s": (1, 600), "baudrate": (1200, 12_000_000),
    "poll_s": (0.05, 60), "interval_s": (1, 86400), **central_config.RANGES}


def load(path: str | Path) -> Config:
    path = Path(path)
    values, where = settings.read(path, _SCHEMA, _RANGES, always=("dock", "serial"))
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
    if "store" in values:
        raise ConfigError(f"{where('store')}: a dock holds no credentials for the central's"
                          " store (the central hands out an upload for each segment): remove"
                          " [store] from the dock's configuration")
    central = values.get("central", {})
    cfg = Config(path=str(path.resolve()), identity=resolve(dock["identity"]),
                 vault=resolve(dock["vault"]), state_dir=resolve(dock["state_dir"]),
                 policy=resolve(dock["policy"]), enroll_unknown=dock["enroll_unknown"],
                 recheck_s=float(dock["recheck_s"]), timeout_s=float(dock["timeout_s"]),
                 watch=tuple(serial["watch"]), ignore=tuple(serial["ignore"]),
                 baudrate=serial["baudrate"], poll_s=float(serial["poll_s"]), mqtt=mqtt,
                 central_url=central.get("url", ""), central_ca=resolve(central.get("ca", "")),
                 forward_s=float(central.get("interval_s", 60.0)))
    _check_paths(cfg, where)
    return cfg


def _check_paths(cfg: Config, where: Any) -> None:
    vault = Path(cfg.vault)
    if not (vault / "vault.sqlite").is_file():
        raise ConfigError(f"{where('dock', 'vault')}: {cfg.vault} is not a vault (make it with"
                          " `bodycam enroll`)")
    if cfg.policy and not Path(cfg.policy).is_file():
        raise ConfigError(f"{where('dock', 'policy')}: no policy file {cfg.policy}")
    if cfg.central_ca and not Path(cfg.central_ca).is_file():
        raise ConfigError(f"{where('central', 'ca')}: no CA file {cfg.central_ca}")
    if not Path(cfg.identity).is_dir():
        raise ConfigError(f"{where('dock', 'identity')}: {cfg.identity} is not a dock identity"
                          " directory")
