"""What `bodycam status` shows: the daemon and each slot, from the files it keeps in its
state directory (host_agent/dockd/service.py, slot.py)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def read(state_dir: str | Path) -> dict[str, Any]:
    """{"daemon": {...} or None, "running": bool, "slots": [...]} (slots by name)."""
    root = Path(state_dir)
    daemon = _load(root / "daemon.json")
    running = False
    if daemon and isinstance(daemon.get("pid"), int):
        try:
            os.kill(daemon["pid"], 0)
            running = True
        except ProcessLookupError:
            running = False
        except PermissionError:
            running = True
    slots = [s for p in sorted((root / "slots").glob("*.json")) if (s := _load(p))]
    now = time.time()
    for s in slots:
        s["age_s"] = round(now - float(s.get("updated", now)), 1)
    return {"state_dir": str(root), "daemon": daemon, "running": running, "slots": slots,
            "forward": _load(root / "forward.json")}


def _load(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def lines(status: dict[str, Any], width: int = 30) -> list[str]:
    """The status for a person: one line per slot, a bar while a recorder is offloading."""
    d = status["daemon"]
    if not status["running"]:
        head = f"dockd is not running (state in {status['state_dir']})"
    else:
        head = f"dockd pid {d['pid']}: vault {d['vault']}, watching {', '.join(d['watch'])}" + (
            f", mqtt {d['mqtt']}" if d.get("mqtt") else "")
    out = [head]
    for s in status["slots"]:
        state = s.get("state", "?")
        device = s.get("device") or "(not identified yet)"
        text = f"  {s['slot']:<40} {device:<16} {state:<10}"
        total, done = int(s.get("total") or 0), int(s.get("done") or 0)
        if state == "offloading" and total:
            frac = done / total
            text += f" [{'#' * int(frac * width):<{width}}] {frac:5.1%}"
        readiness = s.get("readiness")
        if readiness:
            text += " ready" if readiness["ready"] else (
                " not ready: " + "; ".join(readiness["reasons"]))
        last = s.get("last_docking")
        if last:
            text += (f" (last docking #{last['id']}: {last['stored']} records,"
                     f" {time.strftime('%H:%M:%S', time.localtime(last['at']))})")
        if s.get("error"):
            text += f" — {s['error']}"
        out.append(text)
    if len(out) == 1:
        out.append("  no recorder in any slot")
    f = status.get("forward")
    if f:
        text = f"  forwarding to the central: {f.get('state')}"
        if f.get("size") is not None:
            text += f", {f.get('next', 0)} of {f['size']} log entries held there (backlog" \
                    f" {f.get('backlog', 0)})"
        if f.get("error"):
            text += f" — {f['error']}"
        out.append(text)
    return out
