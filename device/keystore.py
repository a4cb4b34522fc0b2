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
    def load_or_create(cls, root: str, log, rng=None) -> "DeviceKey":
        """The key whose seed is on the card, or a new one (seed from `rng(32)`, by default
        os.urandom) if none was ever written."""
        path = root + _SEED_FILE
        try:
            seed = fs.read(path)
        except OSError:
            seed = b""
        if len(seed) != 32:
            if seed:
                raise ValueError("device key file %s is damaged (%d bytes)" % (path, len(seed)))
            seed = (rng or os.urandom)(32)
            fs.write_once(path, seed)
            log("generated a new device key")
        return cls(seed)
