#!/usr/bin/env python3
"""Load on the central tier: N docks forward at once, beside raw boto3 puts to the same store.

    python3 tools/central_load.py [--docks 20] [--records 500] [--kb 16] [--grow 1000000]

Real engines started here (Ceph RGW on memstore, PostgreSQL); the central runs as `bodycam
central serve` in its own process. Each dock is a vault with one recorder's `--records`
signed segments of `--kb` KiB; every dock forwards at once (one process each). Printed, from
the same run:
- forwarding: records/s and MB/s over the wall time of all docks;
- the baseline: the same number of objects of the same size put with plain boto3 from as many
  processes into a bucket with the same Object Lock settings, and the ratio;
- a second baseline: the same puts as presigned PUTs sent with the dock's own client
  (host_agent/central/http.Uploads, no boto3 on the sending side), and that ratio: docks
  put this way, so this is the store's rate with the client cost the docks pay;
- the central's CPU per record (its process's user + system time over the records it took);
- with --grow M: the index filled with M more records (synthetic rows, COPY), then a second
  round of forwarding, to show whether the per-record cost stays flat as the index grows.
Machine-dependent figures: name the machine when quoting them (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from host_agent.central import index  # noqa: E402
from host_agent.keys import new_key  # noqa: E402
from host_agent.lab.ceph import CephRGW  # noqa: E402
from host_agent.lab.postgres import Postgres  # noqa: E402
from tests.custody_world import World  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _forward(args: tuple[str, str, str]) -> tuple[int, int, float]:
    vault_dir, identity_dir, url = args
    from host_agent.central.forward import Forwarder
    from host_agent.keys import DockIdentity
    from host_agent.vault import Vault

    with Vault.open(vault_dir, create=False) as vault:
        done = Forwarder(vault, DockIdentity.load(Path(identity_dir)), url).run()
    return done.records, done.bytes_put, done.seconds


def _raw_puts(args: tuple[dict[str, Any], int, int]) -> int:
    store, count, size = args
    client = s3_client(store)
    import base64
    import datetime as dt
    import hashlib

    until = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    for _ in range(count):
        data = os.urandom(size)
        sha = hashlib.sha256(data).digest()
        client.put_object(Bucket=store["raw_bucket"], Key=f"objects/{sha.hex()}", Body=data,
                          ChecksumSHA256=base64.b64encode(sha).decode(),
                          ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until)
    return count


def _raw_presigned_puts(args: tuple[dict[str, Any], int, int]) -> int:
    store, count, size = args
    import hashlib

    from host_agent.central.http import Uploads
    from host_agent.central.objects import Objects

    objects, uploads = Objects(s3_client(store), store["raw_bucket"], 1), Uploads()
    with tempfile.NamedTemporaryFile() as f:
        for _ in range(count):
            data = os.urandom(size)
            f.seek(0)
            f.write(data)
            f.flush()
            up = objects.upload(hashlib.sha256(data).digest(), size, hold=False)
            uploads.put(up["url"], up["headers"], Path(f.name), size)
    uploads.close()
    return count


def s3_client(store: dict[str, Any]) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=store["endpoint"], region_name="us-east-1",
                        aws_access_key_id=store["access"], aws_secret_access_key=store["secret"],
                        config=Config(s3={"addressing_style": "path"}))


def make_docks(base: Path, docks: int, records: int, kb: int, tag: str) -> list[World]:
    worlds = []
    for i in range(docks):
        w = World(base / f"{tag}{i}", f"{tag}-{i}", pki=base / "pki")
        device = f"{tag.upper()}{i}-R"
        w.recorder(device)
        for _ in range(records):
            w.segment(device, data=os.urandom(kb * 1024))
        w.release(device)
        w.checkpoint()
        worlds.append(w)
    return worlds


def forward_all(worlds: list[World], base: Path, url: str, central_pid: int) -> dict[str, float]:
    jobs = [(str(w.base / "vault"), str(base / "pki" / w.dock.dock_id), url) for w in worlds]
    for w in worlds:
        w.vault.close()
    cpu0 = cpu_seconds(central_pid)
    t0 = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
        results = pool.map(_forward, jobs)
    wall = time.perf_counter() - t0
    cpu = cpu_seconds(central_pid) - cpu0
    recs = sum(r[0] for r in results)
    mb = sum(r[1] for r in results) / 1e6
    return {"records": recs, "mb": round(mb, 2), "seconds": round(wall, 2),
            "records_per_s": round(recs / wall, 1), "mb_per_s": round(mb / wall, 2),
            "central_cpu_ms_per_record": round(cpu / max(recs, 1) * 1000, 3)}


def grow_index(dsn: str, rows: int) -> float:
    """Fill the index with synthetic records (other recorders) by COPY; seconds taken."""
    import psycopg

    t0 = time.perf_counter()
    per_device = 10_000
    with psycopg.connect(dsn) as db:
        with db.cursor().copy("COPY devices(device_id, public_key, origin, idx) FROM STDIN"
                              ) as copy:
            for d in range(rows // per_device + 1):
                copy.write_row((f"SYN-{d}", os.urandom(32), "synthetic", d))
        with db.cursor().copy(
                "COPY records(device_id, seq, kind, record, record_sha256, prev, object_sha256,"
                " size, data_state, origin, idx) FROM STDIN") as copy:
            for n in range(rows):
                d, seq = divmod(n, per_device)
                copy.write_row((f"SYN-{d}", seq + 1, "segment", b"r" * 200, os.urandom(32),
                                os.urandom(32), os.urandom(32), 16384, "stored", "synthetic",
                                n))
        db.execute("ANALYZE records")
        db.commit()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docks", type=int, default=20)
    ap.add_argument("--records", type=int, default=500, help="records per dock")
    ap.add_argument("--kb", type=int, default=16, help="KiB per segment")
    ap.add_argument("--grow", type=int, default=0, help="then grow the index by this many"
                    " records and forward a second round")
    ap.add_argument("--json")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bodycam-load-"))
    out: dict[str, Any] = {"machine": {"cpu": _cpu(), "nproc": os.cpu_count(),
                                       "python": platform.python_version()},
                           "docks": args.docks, "records_per_dock": args.records,
                           "kb": args.kb}
    with CephRGW(base / "ceph", memstore_bytes=8 << 30) as ceph, Postgres(base / "pg") as pg:
        s3 = ceph.client()
        bucket, raw_bucket = "load-" + uuid.uuid4().hex[:8], "raw-" + uuid.uuid4().hex[:8]
        for b in (bucket, raw_bucket):
            s3.create_bucket(Bucket=b, ObjectLockEnabledForBucket=True)
        store = {"endpoint": ceph.endpoint_url, "access": ceph.access_key,
                 "secret": ceph.secret_key, "bucket": bucket, "raw_bucket": raw_bucket}
        dsn = pg.create_database("load")
        index.create(dsn)
        (base / "s3.secret").write_text(ceph.secret_key)
        new_key(base / "central" / "central.key")
        port = _free_port()
        worlds = make_docks(base, args.docks, args.records, args.kb, "a")
        (base / "central.toml").write_text(
            f'[central]\nlisten = "127.0.0.1:{port}"\ndatabase = "{dsn}"\n'
            f'unit_key = "{base / "pki" / "unit" / "unit.pub"}"\n'
            f'key = "{base / "central" / "central.key"}"\n'
            f'[store]\nendpoint = "{ceph.endpoint_url}"\nbucket = "{bucket}"\n'
            f'access_key = "{ceph.access_key}"\nsecret_key_file = "{base / "s3.secret"}"\n')
        central = subprocess.Popen([sys.executable, "-m", "host_agent.cli", "central", "serve",
                                    "--config", str(base / "central.toml")], cwd=REPO,
                                   stderr=subprocess.PIPE)
        assert central.stderr is not None
        central.stderr.readline()
        url = f"http://127.0.0.1:{port}"
        try:
            out["forward"] = fwd = forward_all(worlds, base, url, central.pid)
            print("forward:", fwd, flush=True)
            t0 = time.perf_counter()
            per = args.records
            with multiprocessing.get_context("spawn").Pool(args.docks) as pool:
                pool.map(_raw_puts, [(store, per, args.kb * 1024)] * args.docks)
            wall = time.perf_counter() - t0
            n = per * args.docks
            out["raw_puts"] = raw = {"objects": n, "seconds": round(wall, 2),
                                     "puts_per_s": round(n / wall, 1),
                                     "mb_per_s": round(n * args.kb * 1024 / wall / 1e6, 2)}
            out["ratio"] = round(fwd["records_per_s"] / raw["puts_per_s"], 3)
            print("raw boto3 puts:", raw, "ratio", out["ratio"], flush=True)
            t0 = time.perf_counter()
            with multiprocessing.get_context("spawn").Pool(args.docks) as pool:
                pool.map(_raw_presigned_puts, [(store, per, args.kb * 1024)] * args.docks)
            wall = time.perf_counter() - t0
            out["raw_presigned_puts"] = pre = {"objects": n, "seconds": round(wall, 2),
                                               "puts_per_s": round(n / wall, 1)}
            out["ratio_presigned"] = round(fwd["records_per_s"] / pre["puts_per_s"], 3)
            print("raw presigned puts:", pre, "ratio", out["ratio_presigned"], flush=True)
            if args.grow:
                out["grow_seconds"] = round(grow_index(dsn, args.grow), 1)
                more = make_docks(base, args.docks, max(50, args.records // 5), args.kb, "b")
                out["forward_after_grow"] = forward_all(more, base, url, central.pid)
                out["index_records"] = args.grow + fwd["records"] + out[
                    "forward_after_grow"]["records"]
                print("after growing the index by", args.grow, ":",
                      out["forward_after_grow"], flush=True)
        finally:
            central.terminate()
            central.wait(timeout=30)
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


def _cpu() -> str:
    try:
        return next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                    if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main())
