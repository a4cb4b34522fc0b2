"""Two docks forward three recorders' evidence to the central tier — real Ceph RGW (S3 Object
Lock), real PostgreSQL — and the central trusts none of it: it re-verifies every record,
keeps each once, locks each object, cosigns each dock's log, and flags a dock whose vault was
rolled back or whose log forked. Every hostile move is played by a dock or a stranger."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from botocore.exceptions import ClientError

from host_agent.central import cosign, http
from host_agent.central.forward import COSIGNED, Forwarder, ForwardError
from host_agent.central.objects import Objects, StoreError
from host_agent.vault import Vault
from tests.central.tier import Tier
from tests.custody_world import World
from tests.hil.pki import TestCA


def records_in(world: World) -> int:
    return sum(len(world.vault.records(str(d["device_id"]))) for d in world.vault.devices())


def test_two_docks_forward_everything_once_locked_and_cosigned(tier: Tier,
                                                              docks: tuple[World, World]
                                                              ) -> None:
    a, b = docks
    for world in (a, b):
        done = tier.forwarder(world).run()
        assert done.next == done.size == world.vault.log_size() and done.backlog == 0
    total = records_in(a) + records_in(b)
    assert tier.sql("SELECT count(*), count(DISTINCT (device_id, seq)) FROM records")[0] == (
        total, total)
    # every segment object is in the store, locked; deleting the locked version is refused
    objects = tier.sql("SELECT object_sha256, case_no FROM records WHERE data_state ="
                       " 'stored'")
    assert len(objects) == 9  # three segments of each of three recorders
    for sha, case in objects:
        head = tier.s3.head_object(Bucket=tier.bucket, Key=f"objects/{bytes(sha).hex()}")
        assert head["ObjectLockMode"] == "COMPLIANCE"
        # evidence in a case is under a legal hold as well
        assert (head.get("ObjectLockLegalHoldStatus") == "ON") == (case is not None)
        with pytest.raises(ClientError):
            tier.s3.delete_object(Bucket=tier.bucket, Key=f"objects/{bytes(sha).hex()}",
                                  VersionId=head["VersionId"], BypassGovernanceRetention=True)
    # both docks hold a cosignature of their latest checkpoint, by the central's key
    for world in (a, b):
        kept = sorted((world.vault.root / COSIGNED).iterdir())
        latest = kept[-1].read_bytes()
        assert int(latest.split(b"\n")[1]) == world.vault.log_size()
        assert cosign.verify(latest, tier.key.name, tier.key.public_key) is not None
        report = world.vault.verify_report(witness=[str(world.vault.root / COSIGNED)])
        assert report.problems == []
    # again: nothing new, nothing twice
    again = tier.forwarder(a).run()
    assert again.sent == 0 and again.objects_put == 0
    a.segment("REC-1")
    more = tier.forwarder(a).run()
    assert more.sent == 1 and more.records == 1 and more.objects_put == 1
    assert tier.sql("SELECT count(*) FROM records")[0][0] == total + 1


def test_a_rolled_back_vault_is_flagged_and_stopped(tier: Tier, docks: tuple[World, World],
                                                   tmp_path: Path, ceph: Any) -> None:
    a, _ = docks
    a.vault.close()
    shutil.copytree(a.base / "vault", tmp_path / "old-copy")
    a.vault = Vault.open(a.base / "vault", create=False)
    a.segment("REC-1")
    a.segment("REC-2")
    tier.forwarder(a).run()
    # the operator puts the old copy back (two records gone)
    a.vault.close()
    shutil.rmtree(a.base / "vault")
    shutil.copytree(tmp_path / "old-copy", a.base / "vault")
    a.vault = Vault.open(a.base / "vault", create=False)
    with pytest.raises(ForwardError, match="shrank"):
        tier.forwarder(a).run()
    assert tier.sql("SELECT flagged FROM logs WHERE origin = %s", a.vault.origin)[0][0]
    # it stays stopped, whatever the dock sends, until a person clears it
    a.segment("REC-1")
    with pytest.raises(ForwardError, match="flagged|stopped"):
        tier.forwarder(a).run()
    reasons = [r[0] for r in tier.sql("SELECT reason FROM refusals ORDER BY id")]
    assert any("shrank" in r for r in reasons)
    # the person at the centre sees it: `central status` names the log and exits 1
    config = tier.config(ceph, a.unit, tmp_path / "central")
    seen = subprocess.run([sys.executable, "-m", "host_agent.cli", "central", "status",
                           "--config", str(config), "--json"], capture_output=True, text=True,
                          timeout=60)
    assert seen.returncode == 1, seen.stderr
    (log,) = json.loads(seen.stdout)["logs"]
    assert log["origin"] == a.vault.origin and "shrank" in log["flagged"]
    assert log["cosigned"] == log["entries"] > 0


def test_a_forged_record_and_a_missing_object_are_refused(tier: Tier,
                                                         docks: tuple[World, World]) -> None:
    a, _ = docks
    fwd = tier.forwarder(a)
    real_item = fwd._item

    def forged(idx: int, entry: bytes, out: Any) -> dict[str, Any]:
        item = real_item(idx, entry, out)
        if "record" in item:
            rec = bytearray(item["record"])
            rec[-1] ^= 1  # a bit of the signature: the entry's hash no longer matches either
            item["record"] = bytes(rec)
        return item

    fwd._item = forged  # type: ignore[method-assign]
    with pytest.raises(ForwardError, match="not the one the entry names"):
        fwd.run()
    assert tier.sql("SELECT count(*) FROM records")[0][0] == 0
    # a segment that never reached the store: the record waits, the log is not flagged
    fwd2 = tier.forwarder(a)
    fwd2._put = lambda *args, **kw: None  # type: ignore[method-assign]
    with pytest.raises(ForwardError, match="not in the store"):
        fwd2.run()
    assert tier.sql("SELECT flagged FROM logs WHERE origin = %s", a.vault.origin)[0][0] is None
    tier.forwarder(a).run()  # then it goes through
    assert tier.sql("SELECT count(*) FROM records")[0][0] == records_in(a)


def test_a_stranger_and_a_revoked_dock_are_refused(tier: Tier, docks: tuple[World, World],
                                                  tmp_path: Path) -> None:
    from host_agent.lab.unit import lab_unit
    from protocol import authority

    a, _ = docks
    _, stranger = lab_unit(tmp_path / "other-unit", "dock-x")
    fwd = Forwarder(a.vault, stranger, tier.url)
    with pytest.raises(ForwardError, match="certificate refused"):
        fwd.run()
    tier.central.revoked.add(authority.key_id(a.dock.public_key))
    with pytest.raises(ForwardError, match="revoked"):
        tier.forwarder(a).run()
    assert tier.sql("SELECT count(*) FROM refusals")[0][0] >= 2


def test_a_bucket_without_object_lock_is_refused(tier: Tier) -> None:
    plain = "plain-" + uuid.uuid4().hex[:12]
    tier.s3.create_bucket(Bucket=plain)
    with pytest.raises(StoreError, match="no Object Lock"):
        Objects(tier.s3, plain).check_bucket()


def test_the_central_index_is_append_only(tier: Tier, docks: tuple[World, World]) -> None:
    tier.forwarder(docks[0]).run()
    with psycopg.connect(tier.dsn) as db, pytest.raises(psycopg.Error, match="append-only"):
        db.execute("UPDATE records SET case_no = 'X'")


def test_other_bytes_under_a_segment_s_name_are_refused(tier: Tier,
                                                       docks: tuple[World, World]) -> None:
    """A dock that puts other bytes under a segment's SHA-256 (the store, Ceph RGW 16, does
    not check the checksum a put names): the central hashes what the store holds."""
    a, _ = docks
    fwd = tier.forwarder(a)

    def put_wrong(sha: bytes, size: int, *, hold: bool, out: Any) -> None:
        tier.s3.put_object(Bucket=tier.bucket, Key=f"objects/{sha.hex()}", Body=b"x" * size,
                           ObjectLockMode="COMPLIANCE",
                           ObjectLockRetainUntilDate=__import__("datetime").datetime(
                               2100, 1, 1))

    fwd._put = put_wrong  # type: ignore[method-assign]
    with pytest.raises(ForwardError, match="do not hash to the signed SHA-256"):
        fwd.run()
    assert tier.sql("SELECT count(*) FROM records WHERE data_state = 'stored'")[0][0] == 0


def test_the_fleet_sees_each_dock_s_backlog_through_the_bridge(
        tier: Tier, docks: tuple[World, World], two_brokers: Any) -> None:
    """Three engines at once: the dock forwards to the central (Ceph RGW + PostgreSQL), then
    tells its own broker how far it got; the bridge carries that to the central broker under
    the dock's id. `vault verify` shows the central's cosignature."""
    import json
    import subprocess
    import sys

    from host_agent.dockd.config import MqttConfig
    from host_agent.dockd.forwarding import publish
    from tests.central.conftest import DOCK_ID, subscribe

    a, b = docks
    watcher = subscribe(two_brokers.client(two_brokers.central, "fleet"), "bodycam/docks/#")
    done = tier.forwarder(a).run()
    assert tier.forwarder(b).run().backlog == 0
    # both docks' three recorders, each record once, each dock cosigned
    total = records_in(a) + records_in(b)
    assert tier.sql("SELECT count(*), count(DISTINCT (device_id, seq)) FROM records")[0] == (
        total, total)
    for world in (a, b):
        latest = sorted((world.vault.root / COSIGNED).iterdir())[-1].read_bytes()
        assert cosign.verify(latest, tier.key.name, tier.key.public_key) is not None
    cert, key = two_brokers.ca.client("dock")  # the dock's certificate at its own broker
    publish(MqttConfig(two_brokers.dock.host, two_brokers.dock.port,
                       ca=str(two_brokers.ca.ca_file), cert=str(cert), key=str(key)),
            done.to_dict())
    got = watcher.wait(f"bodycam/docks/{DOCK_ID}/dock/forward")
    assert json.loads(got.payload) == {**done.to_dict()} and json.loads(got.payload)[
        "backlog"] == 0
    a.vault.close()
    shown = subprocess.run(
        [sys.executable, "-m", "host_agent.cli", "vault", "verify", str(a.base / "vault"),
         "--witness", str(a.base / "vault" / COSIGNED), "--central-key",
         f"{tier.key.name}={tier.key.public_key.hex()}"], capture_output=True, text=True,
        timeout=120)
    a.vault = Vault.open(a.base / "vault", create=False)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert (f"cosigned by {tier.key.name}: the central saw this log at {done.size} entries"
            in shown.stdout)


def test_a_dock_can_neither_forward_nor_flag_another_dock_s_log(
        tier: Tier, docks: tuple[World, World]) -> None:
    a, b = docks
    tier.forwarder(a).run()
    a.segment("REC-1")  # a log dock B could try to pass off, or fork, under A's origin
    with pytest.raises(ForwardError, match="another dock's"):
        Forwarder(a.vault, b.dock, tier.url).run()
    assert tier.sql("SELECT flagged FROM logs WHERE origin = %s", a.vault.origin)[0][0] is None
    assert tier.forwarder(a).run().sent >= 1  # A forwards on


def test_a_central_speaking_tls_is_reached_only_by_docks_that_trust_its_ca(
        ceph: Any, postgres: Any, docks: tuple[World, World], tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "tls")
    cert, key = ca.server("central")
    tier = Tier(ceph, postgres, docks[0].unit.public,
                tls=http.server_context(str(cert), str(key)))
    try:
        # a client that opens a connection and says nothing holds up no one else
        with socket.create_connection(("127.0.0.1", tier.httpd.server_address[1])):
            done = tier.forwarder(docks[0], tls=http.client_context(str(ca.ca_file))).run()
        assert done.next == docks[0].vault.log_size() and done.cosigned
        # a dock that does not trust the central's CA, or speaks plain HTTP to it: refused
        with pytest.raises(ForwardError, match="CERTIFICATE_VERIFY_FAILED"):
            tier.forwarder(docks[1], tls=http.client_context()).run()
        plain = Forwarder(docks[1].vault, docks[1].dock, tier.url.replace("https", "http"))
        with pytest.raises(ForwardError, match="cannot reach the central"):
            plain.run()
    finally:
        tier.close()


def test_a_flood_of_connections_is_turned_away_not_queued(tier: Tier,
                                                          docks: tuple[World, World]) -> None:
    httpd = http.server(tier.central, max_connections=2)
    http.serve_in_thread(httpd)
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        silent = [socket.create_connection(("127.0.0.1", httpd.server_address[1]))
                  for _ in range(2)]
        # the listener takes connections in order: both slots are taken before the dock's
        with pytest.raises(ForwardError, match="cannot reach"):
            Forwarder(docks[0].vault, docks[0].dock, url).run()
        for s in silent:
            s.close()
        # their threads see the close and give their slots back
        for _ in range(2):
            assert httpd.slots.acquire(timeout=10)  # type: ignore[attr-defined]
        for _ in range(2):
            httpd.slots.release()  # type: ignore[attr-defined]
        done = Forwarder(docks[0].vault, docks[0].dock, url).run()
        assert done.next == docks[0].vault.log_size()
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_an_upload_takes_only_the_segment_s_bytes_with_the_central_s_lock(
        tier: Tier, docks: tuple[World, World], tmp_path: Path) -> None:
    """A dock holds no store credentials, only the uploads the central hands it: a hostile
    dock that sends other bytes, or changes or adds a header, is refused by the store itself
    (Ceph RGW 16 checks the signed payload hash); the central then checks each record's object
    with a HEAD and never reads it back."""
    a, _ = docks
    reads: list[Any] = []
    read = tier.objects._verify_by_reading

    def counted(*args: Any) -> str | None:  # the real read, counted
        reads.append(args)
        return read(*args)

    tier.objects._verify_by_reading = counted  # type: ignore[method-assign,assignment]

    def other_bytes(url: str, headers: dict[str, str], path: Path, size: int) -> None:
        data = bytearray(path.read_bytes())
        data[0] ^= 1
        (tmp_path / "other").write_bytes(data)
        http.Uploads().put(url, headers, tmp_path / "other", size)

    def headers_changed(change: dict[str, str | None]) -> Any:
        def put(url: str, headers: dict[str, str], path: Path, size: int) -> None:
            sent = {**headers, **change}
            http.Uploads().put(url, {k: v for k, v in sent.items() if v is not None}, path,
                               size)
        return put

    for hostile, refusal in (
            (other_bytes, "400 XAmzContentSHA256Mismatch"),
            (headers_changed({"x-amz-object-lock-mode": None,
                              "x-amz-object-lock-retain-until-date": None}),
             "403 SignatureDoesNotMatch"),
            (headers_changed({"x-amz-object-lock-legal-hold": "OFF"}),
             "403 SignatureDoesNotMatch"),
            (headers_changed({"x-amz-acl": "public-read"}), "403 SignatureDoesNotMatch"),
            (headers_changed({"x-amz-grant-read":
                              'uri="http://acs.amazonaws.com/groups/global/AllUsers"'}),
             "400 InvalidRequest")):
        fwd = tier.forwarder(a)
        fwd.store.put = hostile  # type: ignore[method-assign]
        with pytest.raises(ForwardError, match=refusal):
            fwd.run()
    assert tier.s3.list_object_versions(Bucket=tier.bucket).get("Versions", []) == []
    # the dock puts, then dies before the batch goes: the next run puts nothing twice
    fwd = tier.forwarder(a)
    ask = fwd._ask

    def dies_before_forwarding(doc: dict[str, Any]) -> dict[str, Any]:
        if doc["type"] == "forward":
            raise ForwardError("killed")
        return ask(doc)

    fwd._ask = dies_before_forwarding  # type: ignore[method-assign]
    with pytest.raises(ForwardError, match="killed"):
        fwd.run()
    put_before = len(tier.s3.list_object_versions(Bucket=tier.bucket)["Versions"])
    done = tier.forwarder(a).run()
    assert done.backlog == 0 and put_before >= 1 and done.objects_put == 6 - put_before
    versions = tier.s3.list_object_versions(Bucket=tier.bucket)["Versions"]
    assert len(versions) == len({v["Key"] for v in versions}) == 6  # two recorders × three
    assert reads == []
    for v in versions:
        acl = tier.s3.get_object_acl(Bucket=tier.bucket, Key=v["Key"])
        assert [g["Permission"] for g in acl["Grants"]] == ["FULL_CONTROL"]
