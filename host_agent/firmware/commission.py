"""Commission a recorder over its REPL: its key is made on the board, only its id comes back.

The board runs device/commission.py (installed by `bodycam device deploy`): it makes the
device key in the recorder's storage if there is none, stores the unit's public key where the
firmware reads it at boot, and prints the key's id. The seed never crosses the line; the dock
learns the public key later, when the recorder proves it holds it (`bodycam enroll
--expect-fingerprint`, the id printed here).

Only the unix port keeps its seed as a file on the recorder's storage; a board that keeps it in
a store of its own (the ESP32-S3: NVS) is refused here until its board wires its store into
device/commission.py (`run(root, unit_hex, seeds)`), so no seed file lands on its card.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import asdict, dataclass
from typing import Any

from host_agent.firmware.board import Board, BoardError
from protocol import authority

DEFAULT_STORAGE = "card"  # the recorder's storage on the board, relative to its flash root
_FINGERPRINT = re.compile(r"[0-9a-f]{32}")
FILE_SEED_PLATFORMS = ("linux", "darwin")  # the unix port: the seed is a file on its storage
_KEY_TIMEOUT_S = 120.0  # a slow board computes its signing table in pure Python, silently


@dataclass
class Commissioned:
    port: str
    fingerprint: str  # the device key's id (hex): what `bodycam enroll` must see
    new_key: bool  # made now (False: the storage already held one)
    unit: str  # the unit key's id (hex) the recorder is now commissioned to
    storage: str

    def enroll_command(self, port: str = "PORT", vault: str = "VAULT") -> str:
        """The dock's next step, with the fingerprint filled in (PORT: the recorder's dock
        line once it runs its firmware, not this REPL)."""
        return " ".join(["bodycam", "enroll", "--port", shlex.quote(port), "--vault",
                         shlex.quote(vault), "--expect-fingerprint", self.fingerprint])

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "enroll": self.enroll_command()}


def commission(port: str, unit_public: bytes, storage: str = DEFAULT_STORAGE) -> Commissioned:
    """Commission the recorder whose REPL is on `port` to the unit `unit_public`, its key in
    `storage` (the path its firmware opens); BoardError, one line, when it cannot."""
    if len(unit_public) != 32:
        raise ValueError("the unit key must be 32 bytes")
    if not storage.strip("/"):
        raise ValueError(f"{storage!r} is not a storage folder for the recorder")
    with Board(port) as board:
        platform = board.run("import sys\nprint(sys.platform)", "asking the platform").strip()
        if platform not in FILE_SEED_PLATFORMS:
            # A real board keeps its seed in a store of its own (the ESP32-S3: NVS), never on
            # the card: a seed file made here would be a key the firmware never uses, on a card
            # that must carry none.
            raise BoardError(f"{port}: this board ({platform or 'unknown platform'}) keeps its"
                             " device key in a store of its own; commissioning over the REPL"
                             " is wired for the unix port's file store only")
        seed = storage.rstrip("/") + "/device.key"  # only whether it exists is asked
        had = board.run(f"import os\ntry:\n os.stat({seed!r})\n print(1)\nexcept OSError:\n"
                        " print(0)", "looking for a device key").strip()
        try:
            out = board.run(f"from device import commission\ncommission.run({storage!r},"
                            f" {unit_public.hex()!r})", "commissioning", _KEY_TIMEOUT_S)
        except BoardError as exc:
            if "no module named 'device" in str(exc):
                raise BoardError(f"{port}: no recorder firmware on the board: run"
                                 " `bodycam device deploy` first") from None
            raise
    fingerprint = out.strip()
    if not _FINGERPRINT.fullmatch(fingerprint):
        raise BoardError(f"{port}: commissioning: unexpected answer {out[-200:]!r}")
    return Commissioned(port, fingerprint, had != "1", authority.key_id(unit_public).hex(),
                        storage)
