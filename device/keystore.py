"""The device's signing key: born on the device at first boot, never sent anywhere.

Only the public key and its id leave through the protocol. On a board the seed lives in the
secure element or a read-protected flash page; in simulation, a file in the device's storage,
written once (a cut while it is written leaves no file or an empty one: a new key is made,
and nothing was signed with the lost one).
"""

import hashlib
import os

from device import fs
from protocol.ed25519 import SigningKey

_SEED_FILE = "/device.key"


class DeviceKey:
    def __init__(self, seed: bytes) -> None:
        self._key = SigningKey(seed)
        self.public = self._key.public
        self.kid = hashlib.sha256(self.public).digest()[:16]

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    @classmethod
    def load_or_create(cls, root: str, log, rng=None, seeds=None) -> "DeviceKey":
        """The key whose seed `seeds` holds (by default a file on the card, FileSeedStore), or
        a new one (seed from `rng(32)`, by default os.urandom) if none was ever written. A
        board with secure storage passes its own store (read() -> b"" if never written,
        raising if unreadable; write_once(seed)): an unreadable seed is never replaced."""
        store = seeds if seeds is not None else FileSeedStore(root)
        seed = store.read()
        if not seed:
            seed = (rng or os.urandom)(32)
            store.write_once(seed)
            log("generated a new device key (seed in %s)" % getattr(store, "where", "storage"))
        return cls(seed)


class FileSeedStore:
    """The seed in a file in the device's storage (the simulation; a board without secure
    storage). A cut while it is written leaves no file or an empty one."""

    where = "a file on the card"

    def __init__(self, root: str) -> None:
        self.path = root + _SEED_FILE

    def read(self) -> bytes:
        try:
            seed = fs.read(self.path)
        except OSError:
            return b""
        if seed and len(seed) != 32:
            raise ValueError("device key file %s is damaged (%d bytes)" % (self.path, len(seed)))
        return seed

    def write_once(self, seed: bytes) -> None:
        fs.write_once(self.path, seed)
