"""A real mosquitto broker on loopback, for the demo, the tests and the benchmark.

    with Mosquitto(workdir) as broker:          # a free 127.0.0.1 port unless port= is given
        ... broker.host, broker.port ...
        broker.restart()                        # same port: clients must reconnect

The configuration is written to workdir/mosquitto.conf (persistence off, TCP_NODELAY on,
log to workdir/mosquitto.log); `extra_config` lines are appended (password_file, acl_file,
…). The process is stopped by its PID, never by name.

    Mosquitto.production(workdir, etc_dir)      # host_agent/deploy/mosquitto/mosquitto.conf itself

runs the shipped production configuration (TLS listener, client certificates, the ACL) with
only what a test must change rewritten: the listener's port and address, the
/etc/mosquitto/bodycam/ directory (etc_dir holds ca.crt, broker.crt, broker.key and acl or a
copy is made of host_agent/deploy/mosquitto/acl), syslog -> workdir/mosquitto.log, and the user.
`tls_listener_config` writes an equivalent listener from parts, for tests that vary it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from importlib import resources
from pathlib import Path
from typing import Any

from host_agent.lab import processes

_CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
PRODUCTION_ETC = "/etc/mosquitto/bodycam/"


def deploy_file(name: str) -> str:
    """The text of a shipped broker file (host_agent/deploy/mosquitto/NAME, package data)."""
    return (resources.files("host_agent") / "deploy" / "mosquitto" / name).read_text()


class BrokerError(Exception):
    """mosquitto is missing, or did not start (the message quotes its log)."""


def mosquitto_binary() -> str:
    """The mosquitto executable; BrokerError saying how to install it if there is none."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for path in _CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    raise BrokerError("mosquitto is not installed: apt-get install mosquitto")


def tls_listener_config(ca: Path, cert: Path, key: Path, *, require_certificate: bool = True,
                        use_identity_as_username: bool = True,
                        password_file: Path | None = None,
                        acl_file: Path | None = None) -> list[str]:
    """extra_config lines that make the listener TLS-only, as host_agent/deploy/mosquitto does."""
    lines = [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}", "tls_version tlsv1.2",
             "allow_anonymous false"]
    if require_certificate:
        lines.append("require_certificate true")
    if use_identity_as_username:
        lines.append("use_identity_as_username true")
    if password_file is not None:
        lines.append(f"password_file {password_file}")
    if acl_file is not None:
        lines.append(f"acl_file {acl_file}")
    return lines


def production_config(text: str, *, host: str, port: int, etc_dir: Path, log_path: Path,
                      user: str | None = None) -> str:
    """The shipped mosquitto.conf made runnable on a test port, everything else as is."""
    out = []
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["listener"]:
            line = f"listener {port} {host}"
        elif words[:1] == ["log_dest"]:
            line = f"log_dest file {log_path}"
        elif words[:1] == ["log_type"] and words[1:] == ["notice"]:
            line += "\nlog_type information"
        out.append(line.replace(PRODUCTION_ETC, f"{etc_dir}/"))
    if user:
        out.append(f"user {user}")
    return "\n".join(out) + "\n"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Mosquitto:
    def __init__(self, workdir: Path, *, port: int = 0, host: str = "127.0.0.1",
                 extra_config: list[str] | tuple[str, ...] = (),
                 start_timeout: float = 10.0, production_etc: Path | None = None) -> None:
        self.workdir = Path(workdir)
        self.host = host
        self.port = port or free_port(host)
        self.extra_config = list(extra_config)
        self.start_timeout = start_timeout
        self.conf_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.production_etc = production_etc

    @classmethod
    def production(cls, workdir: Path, etc_dir: Path, **kw: Any) -> Mosquitto:
        """The shipped host_agent/deploy/mosquitto configuration (see the module docstring)."""
        etc_dir = Path(etc_dir)
        if not (etc_dir / "acl").exists():
            (etc_dir / "acl").write_text(deploy_file("acl"))
        return cls(workdir, production_etc=etc_dir, **kw)

    @property
    def tls(self) -> bool:
        return self.production_etc is not None or any(
            line.startswith("certfile") for line in self.extra_config)

    def config_text(self) -> str:
        if self.production_etc is not None:
            return production_config(
                deploy_file("mosquitto.conf"), host=self.host, port=self.port,
                etc_dir=self.production_etc, log_path=self.log_path,
                user=pwd.getpwuid(os.geteuid()).pw_name if os.geteuid() == 0 else None,
            ) + "".join(f"{line}\n" for line in self.extra_config)
        lines = [
            "# written by host_agent/lab/broker.py",
            f"listener {self.port} {self.host}",
            "allow_anonymous true" if not any(
                line.startswith(("allow_anonymous", "password_file")) for line in self.extra_config
            ) else "",
            "set_tcp_nodelay true",
            "persistence false",
            # Started as root, mosquitto drops to the `mosquitto` user, which cannot open files
            # in a private work directory (pytest's tmp_path is 0700): stay who we are.
            f"user {pwd.getpwuid(os.geteuid()).pw_name}" if os.geteuid() == 0 else "",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            *self.extra_config,
        ]
        return "\n".join(line for line in lines if line) + "\n"

    def start(self) -> Mosquitto:
        if self.proc is not None and self.proc.poll() is None:
            return self
        exe = mosquitto_binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self.config_text())
        self.proc = subprocess.Popen([exe, "-c", str(self.conf_path)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                self.proc = None
                raise BrokerError(f"mosquitto exited at start: {err.strip()}\n{self.log_text()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise BrokerError(f"mosquitto did not listen on {self.host}:{self.port} "
                                      f"within {self.start_timeout}s\n{self.log_text()}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        processes.stop(proc, 5)
        if proc.stderr:
            proc.stderr.close()

    def restart(self) -> None:
        """Stop the broker and start it again on the same port (every client is dropped)."""
        self.stop()
        self.restarts += 1
        self.start()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
