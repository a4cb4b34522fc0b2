"""A real PostgreSQL server on loopback, for tests.

    with Postgres(workdir) as pg:               # ~1-2 s: initdb, pg_ctl start, createdb
        psycopg.connect(pg.dsn)                 # host=127.0.0.1 port=… dbname=bodycam …
        other_dsn = pg.create_database("other")   # or pg.new_database(): a unique name

A fresh cluster (initdb: superuser `postgres`, trust authentication, UTF8, C locale) started
with pg_ctl on a free 127.0.0.1 port, its Unix socket in its own directory, and durability
turned off for speed (`fsync=off`, `synchronous_commit=off`, `full_page_writes=off`): a crash
loses the data, which a test throws away anyway. Stopped with `pg_ctl stop -m fast`; the
cluster is removed, the server log kept as workdir/postgres.log.

initdb and the server refuse to run as root. As root they run as the `postgres` OS user
(Debian's postgresql package creates it), in a directory that user owns: workdir/postgres, or,
when that user cannot reach workdir (pytest's tmp_path lies under a 0700 directory), a private
directory in the system temp directory (workdir/postgres is then a symlink to it).

Binaries: Debian keeps them out of PATH in /usr/lib/postgresql/<major>/bin (the newest is
used); otherwise wherever `initdb` on PATH really lives. Debian 12: `apt-get install
postgresql` (15).
"""

from __future__ import annotations

import glob
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from host_agent.lab.broker import free_port

INSTALL = "apt-get install postgresql"
_PROGRAMS = ("initdb", "pg_ctl", "postgres", "createdb")
SUPERUSER = "postgres"


class PostgresError(Exception):
    """PostgreSQL is missing, or did not start (the message quotes its log's tail)."""


def _major(bindir: str) -> tuple[int, ...]:
    version = Path(bindir).parent.name
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def postgres_bindir() -> Path | None:
    """The directory holding initdb, pg_ctl, postgres and createdb, or None."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_major, reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(os.path.dirname(os.path.realpath(initdb)))
    for d in candidates:
        if all(os.access(os.path.join(d, p), os.X_OK) for p in _PROGRAMS):
            return Path(d)
    return None


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} is missing)"


class Postgres:
    def __init__(self, workdir: Path, *, dbname: str = "bodycam", start_timeout: float = 60.0,
                 os_user: str = "postgres") -> None:
        self.workdir = Path(workdir)
        self.dbname = dbname
        self.start_timeout = start_timeout
        self.os_user = os_user
        self.host = "127.0.0.1"
        self.port = 0
        self.user = SUPERUSER
        self.bindir: Path | None = None
        self.base: Path | None = None       # the directory the server's user owns
        self._private_tmp = False
        self.running = False
        self.timings: dict[str, float] = {}  # seconds from nothing: "initdb", "start", "ready"

    # -- where things are -------------------------------------------------------------
    @property
    def datadir(self) -> Path:
        assert self.base is not None, "not started"
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        assert self.base is not None, "not started"
        return self.base

    @property
    def log_path(self) -> Path:
        assert self.base is not None, "not started"
        return self.base / "postgres.log"

    def dsn_for(self, dbname: str) -> str:
        return (f"host={self.host} port={self.port} user={self.user} dbname={dbname} "
                f"connect_timeout=10")

    @property
    def dsn(self) -> str:
        """A libpq connection string (psycopg.connect(dsn)) for the test database."""
        return self.dsn_for(self.dbname)

    @property
    def startup_seconds(self) -> float:
        return self.timings.get("ready", 0.0)

    # -- running programs -------------------------------------------------------------
    def _server_ids(self) -> tuple[int, int] | None:
        """(uid, gid) of the server's OS user when running as root, else None (run as is)."""
        if os.geteuid() != 0:
            return None
        try:
            pw = pwd.getpwnam(self.os_user)
        except KeyError:
            raise PostgresError(f"running as root, initdb needs the {self.os_user!r} OS user, "
                                f"which does not exist ({INSTALL} creates it)") from None
        return pw.pw_uid, pw.pw_gid

    def _run(self, what: str, argv: list[str], *, as_server: bool = True,
             timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        assert self.base is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        ids = self._server_ids() if as_server else None
        try:
            return subprocess.run(
                argv, cwd=self.base, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                text=True, check=False, timeout=timeout or self.start_timeout,
                user=ids[0] if ids else None, group=ids[1] if ids else None,
                extra_groups=[] if ids else None)
        except subprocess.TimeoutExpired:
            raise PostgresError(f"{what} did not finish in {timeout or self.start_timeout}s: "
                                f"{shlex.join(argv)}\n{self._log_report()}") from None

    def _log_report(self) -> str:
        if self.base is None:
            return ""
        return f"--- {self.log_path} (tail) ---\n{_tail(self.log_path)}"

    def _prepare_base(self) -> Path:
        """A directory the server's OS user owns and can reach; see the module docstring."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        link = self.workdir / "postgres"
        if link.is_symlink():
            link.unlink()
        ids = self._server_ids()
        link.mkdir(exist_ok=True)
        if ids is None:
            return link
        uid, gid = ids
        os.chown(link, uid, gid)
        link.chmod(0o700)
        reachable = subprocess.run(["test", "-w", str(link), "-a", "-x", str(link)],
                                   check=False, user=uid, group=gid,
                                   extra_groups=[]).returncode == 0
        # The socket path (…/.s.PGSQL.<port>) must fit in sun_path (108 bytes).
        if reachable and len(str(link)) < 80:
            return link
        link.rmdir()
        base = Path(tempfile.mkdtemp(prefix="bodycam-pg-"))
        os.chown(base, uid, gid)
        self._private_tmp = True
        link.symlink_to(base)
        return base

    # -- life cycle -------------------------------------------------------------------
    def start(self) -> Postgres:
        if self.running:
            return self
        self.bindir = postgres_bindir()
        if self.bindir is None:
            raise PostgresError(f"PostgreSQL is not installed (no initdb, pg_ctl, postgres and "
                                f"createdb in /usr/lib/postgresql/*/bin or on PATH): {INSTALL}")
        t0 = time.monotonic()
        self.base = self._prepare_base()
        try:
            self._initdb()
            self.timings["initdb"] = time.monotonic() - t0
            self._pg_ctl_start()
            self.timings["start"] = time.monotonic() - t0
            self.running = True
            self.create_database(self.dbname)
            self.timings["ready"] = time.monotonic() - t0
        except BaseException:
            self.stop()
            raise
        return self

    def _initdb(self) -> None:
        assert self.bindir is not None
        result = self._run("initdb", [
            str(self.bindir / "initdb"), "-D", str(self.datadir), "-A", "trust",
            "-U", SUPERUSER, "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"])
        if result.returncode != 0:
            raise PostgresError(f"initdb failed (exit {result.returncode}):\n"
                                f"{result.stderr.strip()}\n{result.stdout.strip()[-2000:]}")

    def _pg_ctl_start(self) -> None:
        assert self.bindir is not None
        for _attempt in range(3):
            self.port = free_port(self.host)
            options = " ".join([
                f"-p {self.port}", f"-k {shlex.quote(str(self.socket_dir))}",
                f"-c listen_addresses={self.host}", "-c fsync=off",
                "-c synchronous_commit=off", "-c full_page_writes=off"])
            result = self._run("pg_ctl start", [
                str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.log_path),
                "-w", "-t", str(int(self.start_timeout)), "-o", options, "start"],
                timeout=self.start_timeout + 5)
            if result.returncode == 0:
                return
            log = _tail(self.log_path)
            if "Address already in use" not in log:  # another process took the free port
                break
        raise PostgresError(f"pg_ctl start failed (exit {result.returncode}): "
                            f"{result.stderr.strip()}\n{self._log_report()}")

    def create_database(self, name: str) -> str:
        """CREATE DATABASE name; its DSN."""
        assert self.bindir is not None
        result = self._run("createdb", [
            str(self.bindir / "createdb"), "-h", self.host, "-p", str(self.port),
            "-U", SUPERUSER, name], as_server=False)
        if result.returncode != 0:
            raise PostgresError(f"createdb {name} failed: {result.stderr.strip()}\n"
                                f"{self._log_report()}")
        return self.dsn_for(name)

    def new_database(self, prefix: str = "test") -> str:
        """A fresh, uniquely named database (one per test keeps tests apart); its DSN."""
        return self.create_database(f"{prefix}_{uuid.uuid4().hex[:12]}")

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.datadir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        """pg_ctl stop -m fast (immediate, then SIGKILL, if that fails); remove the cluster,
        keep the log as workdir/postgres.log."""
        if self.base is None:
            return
        if self.bindir is not None and (self.datadir / "postmaster.pid").exists():
            for mode in ("fast", "immediate"):
                result = self._run("pg_ctl stop", [
                    str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w",
                    "-t", "20", "stop"], timeout=30)
                if result.returncode == 0:
                    break
            else:
                pid = self._postmaster_pid()
                if pid:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        self.running = False
        if self.log_path.exists():
            shutil.copyfile(self.log_path, self.workdir / "postgres.log")
        link = self.workdir / "postgres"
        if link.is_symlink():
            link.unlink()
        shutil.rmtree(self.base, ignore_errors=True)
        self.base = None

    def __enter__(self) -> Postgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
