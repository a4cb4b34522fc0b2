"""A central service over a fresh database and bucket on the real engines, and two docks of
one unit with three recorders' evidence: what the central tier's tests forward and read.

    Tier(ceph, postgres, unit_key)    the service (host_agent/central/service.py) on HTTP

The fixtures `docks` and `tier` (conftest.py) make two docks of one unit and their Tier.
"""

from __future__ import annotations

import ssl
import uuid
from pathlib import Path
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from host_agent.central import http, index
from host_agent.central.forward import Forwarder
from host_agent.central.objects import Objects
from host_agent.central.service import Central
from host_agent.keys import UnitKey, new_key
from tests.custody_world import World


class CentralKey:
    name = "central.test/witness"

    def __init__(self) -> None:
        self._k = Ed25519PrivateKey.generate()
        self.public_key = self._k.public_key().public_bytes_raw()

    def sign(self, msg: bytes) -> bytes:
        return self._k.sign(msg)


class Tier:
    """A central service over a fresh database and bucket, and its HTTP endpoint."""

    def __init__(self, ceph: Any, postgres: Any, unit_key: bytes,
                 tls: ssl.SSLContext | None = None) -> None:
        self.s3 = ceph.client()
        self.bucket = "evidence-" + uuid.uuid4().hex[:12]
        self.s3.create_bucket(Bucket=self.bucket, ObjectLockEnabledForBucket=True)
        self.dsn = postgres.create_database("central_" + uuid.uuid4().hex[:10])
        index.create(self.dsn)
        self.key = CentralKey()
        self.objects = Objects(self.s3, self.bucket, retention_days=1)
        self.objects.check_bucket()
        self.central = Central(self.dsn, self.objects, unit_key, self.key)
        self.httpd = http.server(self.central, tls=tls)
        http.serve_in_thread(self.httpd)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.httpd.server_address[1]}"

    def forwarder(self, world: World, tls: ssl.SSLContext | None = None) -> Forwarder:
        return Forwarder(world.vault, world.dock, self.url, batch=7, tls=tls)

    def config(self, ceph: Any, unit: UnitKey, base: Path) -> Path:
        """base/central.toml for this tier's database and bucket, as the office and the
        operators use it: the central's cosigning key (central.key), and the records
        office's (office.key) with the unit's certificate for it (office.cert: "records")."""
        base.mkdir(parents=True, exist_ok=True)
        new_key(base / "central.key")
        office = new_key(base / "office.key")
        (base / "office.cert").write_bytes(unit.certify_dock("office", office,
                                                             may=("records",)))
        (base / "s3.secret").write_text(ceph.secret_key + "\n")
        (base / "unit.pub").write_text(unit.public.hex() + "\n")
        path = base / "central.toml"
        path.write_text(f'[central]\ndatabase = "{self.dsn}"\nunit_key = "unit.pub"\n'
                        'key = "central.key"\noffice_key = "office.key"\n'
                        'office_cert = "office.cert"\n'
                        'name = "central.test/office"\n'
                        f'[store]\nendpoint = "{ceph.endpoint_url}"\n'
                        f'bucket = "{self.bucket}"\naccess_key = "{ceph.access_key}"\n'
                        'secret_key_file = "s3.secret"\n')
        return path

    def sql(self, query: str, *args: object) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn) as db:
            return db.execute(query, args).fetchall()  # type: ignore[arg-type]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
