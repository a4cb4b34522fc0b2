"""A real single-node Ceph object store (RGW, S3 with Object Lock) on loopback, for tests.

    with CephRGW(workdir) as store:             # ~1 s from nothing to an S3 user answering
        s3 = store.client()                     # boto3: path-style, us-east-1, SigV4
        ... store.endpoint_url, store.access_key, store.secret_key ...

One monitor, one OSD on memstore (objects live in the OSD's memory: nothing is written to a
disk but the monitor's small store) and radosgw with its beast frontend on a free 127.0.0.1
port; no manager, no authentication between the daemons (`auth … required = none`). Every
path (ceph.conf, data, logs, admin sockets) is inside workdir; the daemons run in the
foreground (`-f`) as children of this process, which stops and reaps them. Nothing needs
root. Debian 12: `apt-get install --no-install-recommends ceph-mon ceph-osd radosgw
ceph-common` (Ceph 16.2 "pacific").

How it starts fast:
- the OSD is in the first OSD map (`osdmaptool --createsimple 1`, given to `ceph-mon --mkfs`),
  so nothing has to wait for a monitor to register it, and `ceph-osd --mkfs` runs with
  `--no-mon-config` (it otherwise waits `client mount timeout` for a monitor);
- `ms mon client mode = crc`: radosgw defaults to `secure`, impossible without auth, and
  retries until `rgw_init_timeout` (300 s);
- `paxos propose interval = 0.01`: radosgw creates its pools one by one and each waited 1 s;
- `objecter tick interval = 0.2`: radosgw's first write may leave while the OSD is still
  booting, and its client looked at the OSD map again only every 5 s.

Limits of this engine worth knowing (measured, see tests/central/test_engines.py): RGW 16.2
checks the body against the signed `x-amz-content-sha256` (a mismatch is refused with
XAmzContentSHA256Mismatch) and against Content-MD5 (BadDigest), but it ignores the S3
"additional checksum" headers (`x-amz-checksum-sha256`): a wrong ChecksumSHA256 is accepted
and none is stored or returned. It checks the signed x-amz-content-sha256 in a presigned
(query-string) PUT as well, but applies headers the signature does not cover (x-amz-acl:
public-read made an object readable by anyone; x-amz-tagging; dropped lock headers left it
unlocked), and it ignores If-None-Match on a PUT (a second version is made).
"""

from __future__ import annotations

import http.client
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from host_agent.lab import processes
from host_agent.lab.broker import free_port

INSTALL = "apt-get install --no-install-recommends ceph-mon ceph-osd radosgw ceph-common"
PROGRAMS = ("monmaptool", "osdmaptool", "ceph-mon", "ceph-osd", "radosgw", "radosgw-admin")
_DIRS = ("/usr/bin", "/usr/sbin", "/usr/local/bin")

# Fixed lab credentials (RGW accepts any 20-character access key and 40-character secret).
ACCESS_KEY = "BODYCAMLABACCESSKEY0"
SECRET_KEY = "bodycam-lab-secret-key-0000000000000000"
USER_ID = "bodycam-lab"


class CephError(Exception):
    """Ceph is missing, or a step or daemon failed (the message quotes its log's tail)."""


class _PortTaken(CephError):
    """A daemon could not bind the port chosen for it (someone took it meanwhile)."""


def find_program(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in _DIRS:
        path = os.path.join(d, name)
        if os.access(path, os.X_OK):
            return path
    return None


def missing_programs() -> list[str]:
    """The Ceph programs CephRGW needs that are not installed (empty when all are)."""
    return [name for name in PROGRAMS if find_program(name) is None]


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} is missing)"
    return "\n".join(text.splitlines()[-lines:])


class _Daemon:
    def __init__(self, name: str, argv: list[str], log: Path, out: Path) -> None:
        self.name, self.argv, self.log, self.out = name, argv, log, out
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, cwd: Path) -> None:
        with open(self.out, "ab") as out:
            self.proc = subprocess.Popen(self.argv, cwd=cwd, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT)

    def dead(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        processes.stop(proc, timeout)

    def port_taken(self) -> bool:
        text = _tail(self.log, 40) + _tail(self.out, 40)
        return "Address already in use" in text or "unable to bind" in text

    def report(self) -> str:
        return (f"--- {self.out} (stdout/stderr) ---\n{_tail(self.out, 10)}\n"
                f"--- {self.log} (tail) ---\n{_tail(self.log)}")


class CephRGW:
    """One mon, one memstore OSD and radosgw in workdir; an S3 user with fixed keys."""

    def __init__(self, workdir: Path, *, start_timeout: float = 60.0,
                 memstore_bytes: int = 1 << 30, access_key: str = ACCESS_KEY,
                 secret_key: str = SECRET_KEY, user_id: str = USER_ID) -> None:
        self.workdir = Path(workdir)
        self.start_timeout = start_timeout
        self.memstore_bytes = memstore_bytes
        self.access_key, self.secret_key, self.user_id = access_key, secret_key, user_id
        self.host = "127.0.0.1"
        self.mon_port = 0
        self.port = 0
        self.fsid = ""
        self.conf_path = self.workdir / "ceph.conf"
        self.log_dir = self.workdir / "log"
        self.daemons: list[_Daemon] = []
        # Seconds from nothing: "mkfs" (mon and OSD stores made), "rgw" (RGW answers HTTP),
        # "user" (the S3 user exists: ready).
        self.timings: dict[str, float] = {}

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def startup_seconds(self) -> float:
        return self.timings.get("user", 0.0)

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client for this store: path-style addressing, us-east-1, SigV4.

        Keyword arguments go to botocore's Config; by default a refused request is not retried
        (a loopback store has nothing transient to wait out, and a test wants the refusal)."""
        import boto3
        from botocore.config import Config

        options: dict[str, Any] = {"signature_version": "s3v4",
                                   "s3": {"addressing_style": "path"},
                                   "retries": {"total_max_attempts": 1}}
        options.update(config)
        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
                            aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, config=Config(**options))

    # -- configuration --------------------------------------------------------------------
    def config_text(self) -> str:
        w = self.workdir
        return f"""# written by host_agent/lab/ceph.py: a throwaway single-node cluster for tests
[global]
fsid = {self.fsid}
mon host = v2:{self.host}:{self.mon_port}
mon initial members = a
public addr = {self.host}
auth cluster required = none
auth service required = none
auth client required = none
# radosgw's default "secure" cannot be had without auth: it would retry for 300 s.
ms mon client mode = crc
# Each pool radosgw creates waits one proposal interval (default 1 s).
paxos propose interval = 0.01
# radosgw's first write can go out while the OSD is still booting; its client re-reads the
# OSD map on a tick (default 5 s): a 5 s start in one of three without this.
objecter tick interval = 0.2
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
# A full CI disk must not stop the monitor (its store is tiny).
mon data avail crit = 0
# A port taken meanwhile fails at once (start() retries with new ports), not after 10 s.
ms bind retry count = 1
ms bind retry delay = 1
# Fail in seconds, not 300, when a client cannot reach the monitor.
client mount timeout = {int(self.start_timeout)}
rgw init timeout = {int(self.start_timeout)}
run dir = {w}/run
admin socket = {w}/run/$name.asok
pid file = {w}/run/$name.pid
log file = {self.log_dir}/$name.log
crash dir = {w}/crash
keyring = {w}/keyring

[mon]
mon data = {w}/mon/$cluster-$id

[osd]
osd data = {w}/osd/$cluster-$id
osd objectstore = memstore
memstore device bytes = {self.memstore_bytes}
osd mon shutdown timeout = 1

[client.rgw]
rgw frontends = beast endpoint={self.host}:{self.port}
rgw data = {w}/rgw
"""

    def _run(self, what: str, argv: list[str], log: Path | None = None) -> str:
        try:
            result = subprocess.run(argv, cwd=self.workdir, stdin=subprocess.DEVNULL,
                                    capture_output=True, text=True,
                                    timeout=self.start_timeout, check=False)
        except subprocess.TimeoutExpired:
            raise CephError(f"{what} did not finish within {self.start_timeout}s: "
                            f"{' '.join(argv)}" + (f"\n{_tail(log)}" if log else "")) from None
        if result.returncode != 0:
            raise CephError(f"{what} failed (exit {result.returncode}): {' '.join(argv)}\n"
                            f"{result.stderr.strip()}\n{result.stdout.strip()[-2000:]}"
                            + (f"\n--- {log} (tail) ---\n{_tail(log)}" if log else ""))
        return result.stdout

    # -- life cycle -----------------------------------------------------------------------
    def start(self) -> CephRGW:
        if self.daemons:
            return self
        missing = missing_programs()
        if missing:
            raise CephError(f"Ceph is not installed (missing {', '.join(missing)}): {INSTALL}")
        for attempt in range(3):
            try:
                self._start_once()
                return self
            except _PortTaken:
                self.stop()
                if attempt == 2:
                    raise
            except BaseException:
                self.stop()
                raise
        return self

    def _start_once(self) -> None:
        exe = {name: find_program(name) or name for name in PROGRAMS}
        t0 = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        for sub in ("run", "log", "crash", "mon", "osd/ceph-0", "rgw"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        self.fsid = str(uuid.uuid4())
        # A free port now may be taken by the time a daemon binds it (other tests run too):
        # a daemon that dies of that makes start() try again with new ports.
        self.mon_port, self.port = free_port(self.host), free_port(self.host)
        while self.port == self.mon_port:
            self.port = free_port(self.host)
        self.conf_path.write_text(self.config_text())
        conf = ["-c", str(self.conf_path)]
        monmap, osdmap = self.workdir / "monmap", self.workdir / "osdmap"
        self._run("monmaptool", [exe["monmaptool"], "--create", "--clobber", "--fsid",
                                 self.fsid, "--addv", "a",
                                 f"[v2:{self.host}:{self.mon_port}]", str(monmap)])
        # The OSD is in the first map: it can boot without anyone running `ceph osd new`.
        self._run("osdmaptool", [exe["osdmaptool"], *conf, "--createsimple", "1",
                                 "--clobber", str(osdmap)])
        self._run("ceph-mon --mkfs", [exe["ceph-mon"], *conf, "--mkfs", "-i", "a",
                                      "--monmap", str(monmap), "--osdmap", str(osdmap)],
                  self.log_dir / "mon.a.log")
        self._run("ceph-osd --mkfs", [exe["ceph-osd"], *conf, "--mkfs", "-i", "0",
                                      "--no-mon-config", "--osd-uuid", str(uuid.uuid4())],
                  self.log_dir / "osd.0.log")
        self.timings["mkfs"] = time.monotonic() - t0
        self.daemons = [
            _Daemon("ceph-mon", [exe["ceph-mon"], *conf, "-f", "-i", "a"],
                    self.log_dir / "mon.a.log", self.log_dir / "mon.a.out"),
            _Daemon("ceph-osd", [exe["ceph-osd"], *conf, "-f", "-i", "0"],
                    self.log_dir / "osd.0.log", self.log_dir / "osd.0.out"),
            _Daemon("radosgw", [exe["radosgw"], *conf, "-f", "-n", "client.rgw"],
                    self.log_dir / "client.rgw.log", self.log_dir / "client.rgw.out"),
        ]
        for daemon in self.daemons:
            daemon.start(self.workdir)
        self._wait_for_rgw(t0)
        self.timings["rgw"] = time.monotonic() - t0
        self._run("radosgw-admin user create",
                  [exe["radosgw-admin"], *conf, "user", "create", "--uid", self.user_id,
                   "--display-name", "bodycam lab", "--access-key", self.access_key,
                   "--secret-key", self.secret_key],
                  self.log_dir / "client.admin.log")
        self.timings["user"] = time.monotonic() - t0

    def _answers(self) -> bool:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=1.0)
        try:
            conn.request("GET", "/")
            return conn.getresponse().status < 500
        except OSError:
            return False
        finally:
            conn.close()

    def _wait_for_rgw(self, t0: float) -> None:
        deadline = t0 + self.start_timeout
        while True:
            for daemon in self.daemons:
                code = daemon.dead()
                if code is not None:
                    error = _PortTaken if daemon.port_taken() else CephError
                    raise error(f"{daemon.name} exited (code {code}) while the store was "
                                f"starting\n{daemon.report()}")
            if self._answers():
                return
            if time.monotonic() > deadline:
                raise CephError(
                    f"radosgw did not answer on {self.endpoint_url} within "
                    f"{self.start_timeout}s\n" + "\n".join(d.report() for d in self.daemons))
            time.sleep(0.05)

    def check(self) -> None:
        """CephError naming any daemon that has died since start()."""
        for daemon in self.daemons:
            code = daemon.dead()
            if code is not None:
                raise CephError(f"{daemon.name} has exited (code {code})\n{daemon.report()}")

    def stop(self) -> None:
        """Stop radosgw, then the OSD (while the monitor can still hear it), then the
        monitor; reap them; remove the stores (the logs and ceph.conf stay in workdir)."""
        daemons, self.daemons = self.daemons, []
        # With a daemon dead the others may wait for it rather than stop: give them less time.
        timeout = 10.0 if all(d.dead() is None for d in daemons) else 2.0
        for daemon in reversed(daemons):
            daemon.stop(timeout)
        for sub in ("mon", "osd", "rgw", "run", "monmap", "osdmap"):
            path = self.workdir / sub
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists():
                path.unlink()

    def __enter__(self) -> CephRGW:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
