"""A vault moved to a new dock PC: a person re-binds its log at the central to the new dock's
key (`bodycam central rebind`), on real Ceph RGW and PostgreSQL. The new dock then forwards and
is cosigned; the old key is refused; every rebind is registered, append-only. Hostile
certificates (another unit's, revoked, expired, not one at all) change nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from host_agent.central import cosign
from host_agent.central.forward import Forwarder, ForwardError
from host_agent.central.service import RebindError
from host_agent.keys import DAY_US, DockIdentity, time_us
from host_agent.lab.unit import lab_unit
from protocol import authority
from tests.central.tier import Tier
from tests.custody_world import World

# its fixtures: two docks of one unit (three recorders), and a central over both engines


def moved(tier: Tier, world: World, new: DockIdentity) -> Forwarder:
    """The forwarder of `world`'s vault on the new dock PC."""
    return Forwarder(world.vault, new, tier.url, batch=7)


def test_a_vault_moved_to_a_new_dock_is_rebound_and_registered(
        tier: Tier, docks: tuple[World, World], tmp_path: Path) -> None:
    a, _ = docks
    tier.forwarder(a).run()
    origin = a.vault.origin
    _, new = lab_unit(tmp_path / "pki", "dock-a2")  # the new PC, certified by the same unit
    done = tier.central.rebind(origin, new.cert, "Li Wei", "dock-a's PC replaced")
    assert done["old"]["dock"] == "dock-a" and done["new"]["dock"] == "dock-a2"
    assert done["new"]["key_id"] == authority.key_id(new.public_key).hex()
    assert done["flagged"] is None
    assert tier.sql("SELECT dock_id, dock_key FROM logs WHERE origin = %s", origin) == [
        ("dock-a2", new.public_key)]
    assert tier.sql("SELECT origin, old_dock_id, old_dock_key, new_dock_id, new_dock_key, cert,"
                    " by_name, reason FROM rebinds") == [
        (origin, "dock-a", a.dock.public_key, "dock-a2", new.public_key, new.cert, "Li Wei",
         "dock-a's PC replaced")]
    # the new dock forwards what the vault holds since, and is cosigned
    a.segment("REC-1")
    out = moved(tier, a, new).run()
    assert out.sent >= 1 and out.next == out.size == a.vault.log_size()
    assert cosign.verify(out.cosigned, tier.key.name, tier.key.public_key) is not None
    # the old PC is refused (and cannot flag the log either)
    a.segment("REC-2")
    with pytest.raises(ForwardError, match="another dock's"):
        tier.forwarder(a).run()
    assert tier.sql("SELECT flagged FROM logs WHERE origin = %s", origin)[0][0] is None
    # the register is append-only
    with psycopg.connect(tier.dsn) as db, pytest.raises(psycopg.Error, match="append-only"):
        db.execute("UPDATE rebinds SET by_name = 'someone else'")


def test_hostile_certificates_and_pointless_rebinds_change_nothing(
        tier: Tier, docks: tuple[World, World], tmp_path: Path) -> None:
    a, b = docks
    tier.forwarder(a).run()
    origin = a.vault.origin
    _, stranger = lab_unit(tmp_path / "other-unit", "dock-x")
    unit, revoked = lab_unit(tmp_path / "pki", "dock-revoked")
    tier.central.revoked.add(authority.key_id(revoked.public_key))
    expired = unit.certify_dock("dock-late", b.dock.public_key, days=1,
                                not_before_us=time_us() - 10 * DAY_US)
    for cert, why in ((stranger.cert, "not signed by"), (revoked.cert, "revoked"),
                      (expired, "not valid now"), (b"not a certificate", "not a dock cert"),
                      (a.dock.cert, "already bound to that key")):
        with pytest.raises(RebindError, match=why):
            tier.central.rebind(origin, cert, "Li Wei", "moved")
    with pytest.raises(RebindError, match="holds no log"):
        tier.central.rebind("no-such-vault", b.dock.cert, "Li Wei", "moved")
    with pytest.raises(RebindError, match="who makes it and why"):
        tier.central.rebind(origin, b.dock.cert, " ", "moved")
    assert tier.sql("SELECT dock_id FROM logs WHERE origin = %s", origin) == [("dock-a",)]
    assert tier.sql("SELECT count(*) FROM rebinds") == [(0,)]
    assert tier.forwarder(a).run().next == a.vault.log_size()  # dock A forwards on


def test_a_flagged_log_stays_flagged_until_cleared(tier: Tier, docks: tuple[World, World],
                                                   tmp_path: Path) -> None:
    a, _ = docks
    tier.forwarder(a).run()
    origin = a.vault.origin
    tier.central._flag(origin, "dock-a", a.dock.public_key, "log forked (test)")
    _, new = lab_unit(tmp_path / "pki", "dock-a2")
    done = tier.central.rebind(origin, new.cert, "Li Wei", "moved while flagged")
    assert done["flagged"] == "log forked (test)"
    with pytest.raises(ForwardError, match="stopped"):
        moved(tier, a, new).run()
    tier.central.clear(origin, "Li Wei")
    assert moved(tier, a, new).run().next == a.vault.log_size()


# -- the command -----------------------------------------------------------------------------

def rebind(config: Path, origin: str, cert: Path, *more: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "host_agent.cli", "central", "rebind", origin, "--config",
         str(config), "--cert", str(cert), "--by", "Li Wei", "--reason", "PC replaced", *more],
        capture_output=True, text=True, timeout=120)


def test_the_command_rebinds_and_refuses_in_one_line(tier: Tier, docks: tuple[World, World],
                                                     ceph: Any, tmp_path: Path) -> None:
    a, _ = docks
    tier.forwarder(a).run()
    config = tier.config(ceph, a.unit, tmp_path / "central")
    lab_unit(tmp_path / "other-unit", "dock-x")  # a dock of another unit
    bad = rebind(config, a.vault.origin, tmp_path / "other-unit" / "dock-x" / "dock.cert")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("central rebind: dock certificate refused: ")
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    missing = rebind(config, a.vault.origin, tmp_path / "nowhere.cert")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "nowhere.cert: No such file" in missing.stderr
    _, new = lab_unit(tmp_path / "pki", "dock-a2")
    good = rebind(config, a.vault.origin, tmp_path / "pki" / "dock-a2" / "dock.cert", "--json")
    assert good.returncode == 0, good.stderr
    done = json.loads(good.stdout)
    assert (done["origin"], done["old"]["dock"], done["new"]["dock"], done["by"]) == (
        a.vault.origin, "dock-a", "dock-a2", "Li Wei")
    assert done["new"]["key"] == new.public_key.hex()
    again = rebind(config, a.vault.origin, tmp_path / "pki" / "dock-a2" / "dock.cert")
    assert again.returncode == 2 and "nothing to do" in again.stderr
    back = rebind(config, a.vault.origin, tmp_path / "pki" / "dock-a" / "dock.cert")
    assert back.returncode == 0, back.stderr
    assert back.stdout.startswith(f"{a.vault.origin}: bound to dock dock-a (key id")
    assert tier.sql("SELECT new_dock_id, reason FROM rebinds ORDER BY id") == [
        ("dock-a2", "PC replaced"), ("dock-a", "PC replaced")]
