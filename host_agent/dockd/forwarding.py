"""The dock's side of the central tier, as the daemon runs it: the vault forwarded to the
central (host_agent/central/forward.py) once now and again every `interval_s`, in a worker
process of its own, its progress and backlog in state_dir/forward.json for `bodycam status`."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from host_agent.central.forward import Forwarder, ForwardError, Progress
from host_agent.central.objects import StoreError
from host_agent.dockd.config import Config
from host_agent.keys import DockIdentity
from host_agent.vault import Vault, VaultError


def forward_once(cfg: Config, progress: Any = None) -> Progress:
    if not cfg.central_url or cfg.store is None:
        raise ForwardError(f"{cfg.path} names no [central] and [store] to forward to")
    identity = DockIdentity.load(Path(cfg.identity))
    objects = cfg.store.objects()
    with Vault.open(cfg.vault, create=False) as vault:
        return Forwarder(vault, identity, cfg.central_url, objects).run(progress)


def state_file(cfg: Config) -> Path:
    return Path(cfg.state_dir) / "forward.json"


def write_state(cfg: Config, **fields: Any) -> None:
    path = state_file(cfg)
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = {}
    old.update(fields, updated=time.time())
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(old, sort_keys=True))
    os.replace(tmp, path)


def run(cfg: Config) -> int:
    """One forwarding pass, its outcome in forward.json; the exit status (0: all forwarded)."""
    write_state(cfg, state="forwarding", error="")

    def progress(done: int, total: int) -> None:
        write_state(cfg, next=done, size=total, backlog=max(0, total - done))

    try:
        done = forward_once(cfg, progress)
    except (ForwardError, StoreError, VaultError, OSError) as exc:
        write_state(cfg, state="error", error=str(exc))
        return 1
    write_state(cfg, state="forwarded", **done.to_dict(), last=time.time())
    return 0
