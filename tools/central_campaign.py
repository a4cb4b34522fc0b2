#!/usr/bin/env python3
"""Kill the dock's forwarder or the central service at random points while docks forward,
and check that nothing is lost and nothing is kept twice.

    python3 tools/central_campaign.py [--trials 50] [--seed 1] [--json FILE]

Real engines (Ceph RGW on memstore, PostgreSQL, started here: host_agent/lab/ceph.py,
postgres.py); the central runs as `bodycam central serve` and each dock forwards with
`bodycam forward`, both as processes that get SIGKILL at a random moment. Between trials the
docks keep storing records. At the end every dock forwards to completion, and then:
- the central holds every record of every vault exactly once (nothing lost, no duplicate);
- each segment is one object version in the store (no second copy), locked;
- no dock log is flagged; each dock holds a cosignature of its latest checkpoint, and its
  vault verifies against the cosigned checkpoints it kept.
Prints the counts; exit status 1 if anything was lost, duplicated or flagged.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from host_agent.central import cosign, index  # noqa: E402
from host_agent.central.forward import COSIGNED  # noqa: E402
from host_agent.keys import new_key  # noqa: E402
from host_agent.lab.ceph import CephRGW  # noqa: E402
from host_agent.lab.postgres import Postgres  # noqa: E402
from tests.custody_world import World  # noqa: E402


def bodycam(*args: str) -> list[str]:
    return [sys.executable, "-m", "host_agent.cli", *args]


class Campaign:
    def __init__(self, base: Path, ceph: Any, pg: Any, docks: int, seed: int) -> None:
        self.base = base
        self.rng = random.Random(seed)
        self.ceph = ceph
        self.s3 = ceph.client()
        self.bucket = "campaign-" + uuid.uuid4().hex[:10]
        self.s3.create_bucket(Bucket=self.bucket, ObjectLockEnabledForBucket=True)
        self.dsn = pg.create_database("campaign_" + uuid.uuid4().hex[:10])
        index.create(self.dsn)
        (base / "s3.secret").write_text(ceph.secret_key + "\n")
        store = (f'[store]\nendpoint = "{ceph.endpoint_url}"\nbucket = "{self.bucket}"\n'
                 f'access_key = "{ceph.access_key}"\nsecret_key_file = "{base / "s3.secret"}"\n'
                 'retention_days = 1\n')
        self.central_key = new_key(base / "central" / "central.key")
        self.worlds = [World(base / f"dock{i}", f"dock-{i}", pki=base / "pki")
                       for i in range(docks)]
        self.port = _free_port()
        (base / "central.toml").write_text(
            f'[central]\nlisten = "127.0.0.1:{self.port}"\ndatabase = "{self.dsn}"\n'
            f'unit_key = "{base / "pki" / "unit" / "unit.pub"}"\n'
            f'key = "{base / "central" / "central.key"}"\nname = "central.campaign/w"\n'
            + store)
        for i, w in enumerate(self.worlds):
            (base / f"dock{i}.toml").write_text(
                f'[dock]\nidentity = "{base / "pki" / f"dock-{i}"}"\nvault = "{w.base / "vault"}"'
                f'\nstate_dir = "{w.base / "state"}"\n'
                f'[central]\nurl = "http://127.0.0.1:{self.port}"\n')
            for r in range(2):
                w.recorder(f"D{i}-R{r}")
        self.central: subprocess.Popen[bytes] | None = None
        self.kills = {"forwarder": 0, "central": 0}
        self.trials = 0

    def grow(self) -> None:
        """The docks keep working: a phase or a few segments on a random recorder."""
        w = self.rng.choice(self.worlds)
        device = self.rng.choice(sorted(w.chains))
        if self.rng.random() < 0.3:
            w.phase(device, case=f"C-{self.rng.randrange(5)}", segments=2)
        else:
            for _ in range(self.rng.randrange(1, 4)):
                w.segment(device, data=os.urandom(self.rng.randrange(1, 64) * 1024))
        w.release(device)

    def start_central(self) -> None:
        if self.central is not None and self.central.poll() is None:
            return
        self.central = subprocess.Popen(bodycam("central", "serve", "--config",
                                                str(self.base / "central.toml")), cwd=REPO,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        assert self.central.stderr is not None
        line = self.central.stderr.readline().decode()
        if "serving" not in line or time.monotonic() > deadline:
            raise SystemExit(f"the central did not start: {line}")

    def trial(self) -> None:
        self.trials += 1
        self.grow()
        self.start_central()
        i = self.rng.randrange(len(self.worlds))
        fwd = subprocess.Popen(bodycam("forward", "--config", str(self.base / f"dock{i}.toml")),
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(self.rng.uniform(0.05, 1.2))
        victim = self.rng.choice(("forwarder", "central"))
        proc = fwd if victim == "forwarder" else self.central
        assert proc is not None
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            self.kills[victim] += 1
        proc.wait()
        fwd.wait(timeout=60)

    def finish(self) -> dict[str, Any]:
        self.start_central()
        for i in range(len(self.worlds)):
            done = subprocess.run(bodycam("forward", "--config", str(self.base / f"dock{i}.toml"),
                                          "--json"), cwd=REPO, capture_output=True, text=True,
                                  timeout=300)
            if done.returncode != 0:
                raise SystemExit(f"dock {i} could not finish forwarding: {done.stderr}")
        import psycopg

        with psycopg.connect(self.dsn) as db:
            held = db.execute("SELECT device_id, seq FROM records").fetchall()
            flagged = db.execute("SELECT origin, flagged FROM logs WHERE flagged IS NOT NULL"
                                 ).fetchall()
        expected = {(str(d["device_id"]), int(str(r["seq"]))) for w in self.worlds
                    for d in w.vault.devices() for r in w.vault.records(str(d["device_id"]))}
        got = [(str(a), int(b)) for a, b in held]
        versions: dict[str, int] = {}
        for page in self.s3.get_paginator("list_object_versions").paginate(Bucket=self.bucket):
            for v in page.get("Versions", []):
                versions[v["Key"]] = versions.get(v["Key"], 0) + 1
        central_pub = bytes.fromhex((self.base / "central" / "central.pub").read_text().strip())
        cosigned_ok = 0
        verified = 0
        for w in self.worlds:
            kept = sorted((w.vault.root / COSIGNED).iterdir())
            latest = kept[-1].read_bytes() if kept else b""
            if latest and int(latest.split(b"\n")[1]) == w.vault.log_size() and cosign.verify(
                    latest, "central.campaign/w", central_pub):
                cosigned_ok += 1
            if not w.vault.verify_report(witness=[str(w.vault.root / COSIGNED)]).problems:
                verified += 1
        return {"trials": self.trials, "kills": self.kills, "records": len(expected),
                "lost": len(expected - set(got)), "duplicated": len(got) - len(set(got)),
                "unexpected": len(set(got) - expected),
                "objects": len(versions),
                "objects_twice": sum(1 for n in versions.values() if n > 1),
                "flagged": [f"{o}: {r}" for o, r in flagged],
                "docks_cosigned": cosigned_ok, "docks_verified": verified,
                "docks": len(self.worlds)}

    def close(self) -> None:
        if self.central is not None and self.central.poll() is None:
            self.central.terminate()
            self.central.wait(timeout=30)
        for w in self.worlds:
            w.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(trials: int, seed: int, docks: int = 2, base: Path | None = None) -> dict[str, Any]:
    base = base or Path(tempfile.mkdtemp(prefix="bodycam-campaign-"))
    with CephRGW(base / "ceph") as ceph, Postgres(base / "pg") as pg:
        c = Campaign(base, ceph, pg, docks, seed)
        try:
            for _ in range(trials):
                c.trial()
            return c.finish()
        finally:
            c.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--docks", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    t0 = time.monotonic()
    out = run(args.trials, args.seed, args.docks)
    out["seconds"] = round(time.monotonic() - t0, 1)
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    bad = (out["lost"] or out["duplicated"] or out["unexpected"] or out["objects_twice"]
           or out["flagged"] or out["docks_cosigned"] != out["docks"]
           or out["docks_verified"] != out["docks"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
