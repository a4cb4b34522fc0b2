"""A unit and a dock it certified, made on first use: what the demo and the tests dock with.

A real unit keeps its key offline and certifies each dock's own key (`bodycam unit certify`);
the lab keeps both in one folder, with the same files and the same code.
"""

from __future__ import annotations

from pathlib import Path

from host_agent.keys import DockIdentity, UnitKey
from protocol import authority


def lab_unit(base: Path, dock_id: str = "lab-dock",
             may: tuple[str, ...] | None = None) -> tuple[UnitKey, DockIdentity]:
    """(the unit's key in base/unit, a dock certified by it in base/<dock_id>)."""
    base = Path(base)
    unit_dir, dock_dir = base / "unit", base / dock_id
    unit = UnitKey.load(unit_dir) if (unit_dir / "unit.key").exists() else UnitKey.create(
        unit_dir)
    if not (dock_dir / "dock.cert").exists():
        public = DockIdentity.create_key(dock_dir)
        cert = unit.certify_dock(dock_id, public, may=authority.DOCK_RIGHTS if may is None else may)
        DockIdentity.install_cert(dock_dir, cert, unit.public)
    return unit, DockIdentity.load(dock_dir)


def device_fingerprint(storage: Path) -> str:
    """The key fingerprint a simulated recorder would show on its screen (read off its card:
    the simulation keeps the device key in a file, where a board keeps it in secure storage)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from host_agent.vault import key_id

    for name in ("device.key.new", "device.key"):
        path = Path(storage) / name
        if path.is_file() and path.stat().st_size == 32:
            seed = path.read_bytes()
            return key_id(Ed25519PrivateKey.from_private_bytes(seed).public_key()
                          .public_bytes_raw()).hex()
    return "(not generated yet)"
