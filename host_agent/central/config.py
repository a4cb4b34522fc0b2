"""The central's configuration (central.toml) and the object-store section both sides share.

    [central]
    listen = "0.0.0.0:8470"               where the service answers
    tls_cert = "/etc/bodycam/central/tls.crt"   its TLS certificate and key (PEM): the service
    tls_key = "/etc/bodycam/central/tls.key"    then speaks HTTPS; both, or neither
    database = "postgresql://…"           its PostgreSQL (a libpq connection string)
    unit_key = "/etc/bodycam/unit.pub"    the unit whose certified docks it serves
    key = "/etc/bodycam/central/central.key"   its cosigning key (`bodycam central keygen`)
    name = "central.example/witness"      the key's name in cosignatures
    office_key = "/etc/bodycam/office/office.key"    the records office's own key and the
    office_cert = "/etc/bodycam/office/office.cert"  unit's certificate for it, with the right
                                          "records" alone (`bodycam unit certify --may
                                          records`): it signs the checkpoints of the central's
                                          register log, which export packages rest on
    revoked = []                          key ids (hex) of docks it no longer serves

    [store]                               the S3 store with Object Lock (the central alone holds
                                          its credentials: docks put with its uploads)
    endpoint = "http://127.0.0.1:7480"
    bucket = "evidence"
    access_key = "…"
    secret_key_file = "/etc/bodycam/central/s3.secret"
    region = "us-east-1"
    retention_days = 183                  COMPLIANCE retention of every object
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from host_agent import settings
from host_agent.central.objects import Objects
from host_agent.central.sigv4 import Signer

STORE: dict[str, tuple[type | tuple[type, ...], Any]] = {
    "endpoint": (str, None), "bucket": (str, None), "access_key": (str, None),
    "secret_key_file": (str, None), "region": (str, "us-east-1"),
    "retention_days": (int, 183)}
RANGES: dict[str, tuple[float, float]] = {"retention_days": (1, 36500)}
SCHEMA: settings.Schema = {
    "central": {"listen": (str, "127.0.0.1:8470"), "database": (str, None),
                "unit_key": (str, None), "key": (str, None),
                "name": (str, "bodycam-central"), "office_key": (str, ""), "office_cert": (str, ""),
                "revoked": (list, []),
                "tls_cert": (str, ""), "tls_key": (str, "")},
    "store": STORE,
}


@dataclass(frozen=True)
class StoreConfig:
    endpoint: str
    bucket: str
    access_key: str
    secret_key_file: str
    region: str
    retention_days: int

    def objects(self) -> Objects:
        import boto3
        from botocore.config import Config as BotoConfig

        secret = Path(self.secret_key_file).read_text().strip()
        client = boto3.client("s3", endpoint_url=self.endpoint, region_name=self.region,
                              aws_access_key_id=self.access_key, aws_secret_access_key=secret,
                              config=BotoConfig(s3={"addressing_style": "path"},
                                                retries={"max_attempts": 3}))
        return Objects(client, self.bucket, self.retention_days,
                       Signer(self.endpoint, self.access_key, secret, self.region))


def store_config(values: dict[str, Any], base: Path) -> StoreConfig:
    return StoreConfig(values["endpoint"], values["bucket"], values["access_key"],
                       str((base / values["secret_key_file"]).resolve()), values["region"],
                       values["retention_days"])


@dataclass(frozen=True)
class CentralConfig:
    path: str
    host: str
    port: int
    database: str
    unit_key: str
    key: str
    name: str
    store: StoreConfig
    revoked: tuple[str, ...] = field(default_factory=tuple)
    office_key: str = ""
    office_cert: str = ""
    tls_cert: str = ""
    tls_key: str = ""


def load(path: str | Path) -> CentralConfig:
    path = Path(path)
    values, where = settings.read(path, SCHEMA, RANGES, always=("central", "store"))
    c = values["central"]
    host, sep, port = c["listen"].rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise settings.SettingsError(f"{where('central', 'listen')}: listen {c['listen']!r}"
                                     " is not HOST:PORT")
    for text in c["revoked"]:
        try:
            if len(bytes.fromhex(text)) != 16:
                raise ValueError
        except ValueError:
            raise settings.SettingsError(f"{where('central', 'revoked')}: {text!r} is not a"
                                         " dock key id (32 hex digits)") from None
    if bool(c["office_key"]) != bool(c["office_cert"]):
        raise settings.SettingsError(f"{where('central', 'office_key')}: the records office"
                                     " needs both office_key and office_cert")
    if bool(c["tls_cert"]) != bool(c["tls_key"]):
        raise settings.SettingsError(f"{where('central', 'tls_cert')}: TLS needs both tls_cert"
                                     " and tls_key")
    base = path.parent

    def resolve(value: str) -> str:
        return str((base / value).resolve()) if value else ""

    return CentralConfig(str(path.resolve()), host or "127.0.0.1", int(port), c["database"],
                         str((base / c["unit_key"]).resolve()), str((base / c["key"]).resolve()),
                         c["name"], store_config(values["store"], base), tuple(c["revoked"]),
                         resolve(c["office_key"]), resolve(c["office_cert"]),
                         resolve(c["tls_cert"]), resolve(c["tls_key"]))
