"""The policy in force on the device: the annex, or a unit's refinement it has verified.

The unit's public key is set when the recorder is commissioned (`unit.pub` on its storage) and
never changes through the dock: a dock can deliver a policy, but only the unit can sign one.
"""

from device import fs
from protocol import policy
from protocol.ed25519 import verify

_POLICY_FILE = "/policy.cose"
_UNIT_KEY_FILE = "/unit.pub"


class PolicyStore:
    def __init__(self, root: str, log) -> None:
        self._root = root
        self._log = log
        self.unit_key = b""
        try:
            self.unit_key = fs.read(root + _UNIT_KEY_FILE)  # empty: a cut while commissioning
        except OSError:
            pass
        self.current = policy.annex()
        try:
            self.current = self._open(fs.read(root + _POLICY_FILE))
        except OSError:
            pass
        except policy.PolicyError as exc:
            # Stored policy no longer verifies (damaged card?): the annex applies, loudly.
            log("stored policy rejected, the annex applies: %s" % exc)
        self.name = policy.name(self.current)

    def commission(self, unit_public: bytes) -> None:
        """Set the unit key once, at commissioning; a different key later is refused."""
        if self.unit_key and self.unit_key != unit_public:
            raise policy.PolicyError("this recorder is commissioned to another unit")
        if not self.unit_key:
            fs.write_once(self._root + _UNIT_KEY_FILE, unit_public)
            self.unit_key = unit_public

    def _open(self, signed) -> dict:
        if len(self.unit_key) != 32:
            raise policy.PolicyError("no unit key: this recorder takes only the annex")
        return policy.open_signed(signed, self.unit_key, verify)

    def adopt(self, signed) -> str:
        """Verify and adopt a signed policy; the old one stays in force on any error."""
        new = self._open(signed)
        if new["id"] == self.current["id"] and new["version"] <= self.current["version"]:
            raise policy.PolicyError("policy %s is not newer than %s" % (policy.name(new),
                                                                          self.name))
        fs.write_atomic(self._root + _POLICY_FILE, signed)
        self.current = new
        self.name = policy.name(new)
        return self.name

    def threshold(self, key: str) -> int:
        return self.current["thresholds"][key]

    def row(self, no: int):
        return policy.row(self.current, no)
