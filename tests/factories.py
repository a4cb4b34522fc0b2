"""Test helpers that build real signed record chains on CPython (no device, no mocks).

`RecordChain` plays a recorder: it holds an Ed25519 key, signs each segment manifest as a
COSE_Sign1 exactly as the device does, and advances `seq` and `prev` so the records form a
valid chain from GENESIS. Other test modules reuse it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from host_agent.vault import Vault
from host_agent.vault.evidence import key_id
from protocol import cose, manifest

SEGMENT_US = 10_000_000
T0_US = 1_700_000_000_000_000


class RecordChain:
    """A fake recorder: `next_segment(data)` returns (signed record bytes, manifest fields)."""

    def __init__(self, device_id: str = "SIM-1234", seed: bytes | None = None) -> None:
        self.device_id = device_id
        if seed is None:
            self.private_key = Ed25519PrivateKey.generate()
        else:
            self.private_key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed).digest())
        self.public_key = self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.kid = key_id(self.public_key)
        self.seq = 0  # last issued
        self.prev = manifest.GENESIS
        self.t_us = T0_US

    def sign(self, fields: dict[str, Any]) -> bytes:
        """Sign any manifest fields (checked by manifest.encode) without touching the chain."""
        return cose.sign1(manifest.encode(fields), self.kid, self.private_key.sign)

    def segment_fields(self, data: bytes, **overrides: Any) -> dict[str, Any]:
        """The fields the next segment would carry; `overrides` replace any of them."""
        fields: dict[str, Any] = {
            "v": manifest.FORMAT_VERSION,
            "kind": manifest.KIND_SEGMENT,
            "device_id": self.device_id,
            "seq": self.seq + 1,
            "prev": self.prev,
            "policy": manifest.DEFAULT_POLICY,
            "fw": "0.1.0",
            "sha256": hashlib.sha256(data).digest(),
            "size": len(data),
            "t_start": self.t_us,
            "t_end": self.t_us + SEGMENT_US,
            "clock": {"state": "synced", "synced_at": T0_US - 60_000_000, "uncertainty_us": 2000},
            "tracks": list(manifest.TRACKS_AV),
            "truncated": False,
            "phase": {},
            "pre_event_ms": 0,
        }
        fields.update(overrides)
        return fields

    def next_segment(self, data: bytes, **overrides: Any) -> tuple[bytes, dict[str, Any]]:
        """Sign the next segment of the chain and advance seq/prev/time."""
        fields = self.segment_fields(data, **overrides)
        record = self.sign(fields)
        self.seq = fields["seq"]
        self.prev = manifest.record_hash(record)
        self.t_us = fields["t_end"]
        return record, fields


@contextmanager
def enrolled_vault(root: Path, chain: RecordChain) -> Iterator[Vault]:
    """A new vault under `root` with the chain's recorder enrolled (for a pytest fixture)."""
    vault = Vault.open(root / "vault")
    vault.enroll(chain.device_id, chain.public_key, by="test")
    try:
        yield vault
    finally:
        vault.close()
