"""A dock with many slots: every port docked at once, in worker processes.

One CPython process cannot serve 16 recorders at line speed: the sessions share one GIL, and
each spends most of its CPU in Python code (framing, messages, the vault's bookkeeping). So
`dock_many` splits the ports over worker processes (by default one per port); inside a worker
each of its ports gets a thread. Every session opens its own `Vault` on the same root: SQLite
serialises what the ingest step stores (it holds the write lock, BEGIN IMMEDIATE, with a busy
timeout), and the store order and the device's release after a durable store are the same as
for a single `bodycam dock`.

A port that fails does not stop the others: its result carries the error, and since nothing is
released that the vault does not hold, docking that recorder again resumes where it stopped.

Workers come from a `forkserver`: a clean process that forks them, so the caller's threads
(a GUI, an MQTT client, a test's null modem relays) are never copied into a worker. As with
any multiprocessing start method but fork, a script that calls `dock_many` must guard its
top level with `if __name__ == "__main__":` (each worker imports the caller's main module).
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from host_agent.dock.session import DockSession, SessionError, dock
from host_agent.keys import DockIdentity, KeyFileError
from host_agent.transport import TransportError
from host_agent.transport.serial import SerialTransport
from host_agent.vault import Vault, VaultError

log = logging.getLogger(__name__)


@dataclass
class PortResult:
    """What happened on one port. `report` is `DockReport.to_dict()`, or None on an error."""

    port: str
    report: dict[str, Any] | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.report is not None and not self.error

    @property
    def bytes(self) -> int:
        return int(self.report["offload"]["bytes"]) if self.report else 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Options:
    vault: str
    identity_dir: str  # each worker loads the dock's key itself: private keys are not pickled
    enroll_unknown: bool
    policy: bytes | None
    baudrate: int
    timeout: float


def _dock_port(port: str, opts: _Options) -> PortResult:
    result = PortResult(port)
    try:
        with Vault.open(opts.vault) as vault:  # one Vault (one SQLite connection) per session
            transport = SerialTransport(port, baudrate=opts.baudrate)
            transport.open()
            try:
                session = DockSession(transport, vault, DockIdentity.load(Path(opts.identity_dir)),
                                      enroll_unknown=opts.enroll_unknown, timeout=opts.timeout)
                result.report = dock(session, policy_file=opts.policy).to_dict()
            finally:
                transport.close()
    except (SessionError, TransportError, VaultError, KeyFileError, OSError) as exc:
        # Nothing was released that the vault does not hold; the next docking resumes.
        result.error = f"{type(exc).__name__}: {exc}"
        log.error("%s: %s", port, result.error)
    return result


def _dock_group(ports: list[str], opts: _Options) -> list[PortResult]:
    """A worker process: its ports, one thread each."""
    if len(ports) == 1:
        return [_dock_port(ports[0], opts)]
    results: list[PortResult] = [PortResult(p, error="not run") for p in ports]

    def one(i: int) -> None:
        results[i] = _dock_port(ports[i], opts)

    threads = [threading.Thread(target=one, args=(i,), name=f"dock-{p}")
               for i, p in enumerate(ports)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def dock_many(
    ports: Sequence[str],
    vault: str | Path,
    *,
    identity_dir: str | Path,
    processes: int | None = None,
    enroll_unknown: bool = False,
    policy: bytes | None = None,
    baudrate: int = 921600,
    timeout: float = 20.0,
) -> list[PortResult]:
    """Dock every port in `ports` at once into the vault at `vault`; results in port order.

    `processes` worker processes share the ports round-robin (default: one per port). Each
    port gets the whole `session.dock` (identify, clock sync, policy, offload, readiness,
    the docking log). Errors are per port, in `PortResult.error`; this never raises for one.
    """
    ports = list(ports)
    if not ports:
        return []
    if len(set(ports)) != len(ports):
        raise ValueError("a port is listed twice")
    root = Path(vault).absolute()
    Vault.open(root).close()  # create it once here, not racing in the workers
    n = max(1, min(processes or len(ports), len(ports)))
    groups = [ports[i::n] for i in range(n)]
    opts = _Options(str(root), str(Path(identity_dir).absolute()), enroll_unknown, policy,
                    baudrate, timeout)
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    by_port: dict[str, PortResult] = {}
    with ProcessPoolExecutor(max_workers=n, mp_context=ctx) as pool:
        futures = [(g, pool.submit(_dock_group, g, opts)) for g in groups]
        for group, fut in futures:
            try:
                for r in fut.result():
                    by_port[r.port] = r
            except Exception as exc:  # noqa: BLE001 - a worker died: its ports failed
                for p in group:
                    by_port[p] = PortResult(p, error=f"worker failed: {type(exc).__name__}: "
                                                     f"{exc}")
    return [by_port[p] for p in ports]
