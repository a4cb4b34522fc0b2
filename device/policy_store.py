"""The policy in force on the device: the annex, or a unit's refinement it has verified.

The unit's public key is set when the recorder is commissioned (`unit.pub` on its storage) and
never changes through the dock: a dock can deliver a policy, but only the unit can sign one.

No rollback: a policy is adopted only if its version is higher than that of every policy the
recorder has held, whatever their ids (`floor`, a counter that only goes up; the annex is
version 1, so a unit's first policy is version 2 or more). Otherwise any policy the unit ever
signed, or one it signed under another id, could be replayed to bring back rules it has since
replaced. The floor is kept on the card with the policy, in one `fs.write_atomic` of
{"v": 1, "floor": ..., "policy": signed bytes} (CBOR), so a cut leaves both old or both new,
and a stored policy that no longer verifies (the annex then applies) still leaves the floor.
A card written by older firmware holds the signed policy alone: its version is the floor.
"""

from device import fs
from protocol import cbor, policy
from protocol.compat import const
from protocol.ed25519 import verify

_POLICY_FILE = "/policy.cose"
_UNIT_KEY_FILE = "/unit.pub"
_FORMAT = const(1)
_COSE_TAG = b"\xd2"  # first byte of a tagged COSE_Sign1: a policy file of older firmware


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
        self.floor = self.current["version"]  # the highest version held so far
        try:
            signed, floor = _unpack(fs.read(root + _POLICY_FILE))
            self.floor = max(self.floor, floor)
            self.current = self._open(signed)
            self.floor = max(self.floor, self.current["version"])
        except OSError:
            pass
        except ValueError as exc:  # PolicyError, or a file that is not CBOR
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
        if new["version"] <= self.floor:
            raise policy.PolicyError(
                "policy %s is not newer than version %d, the newest this recorder has held"
                " (%s in force)" % (policy.name(new), self.floor, self.name))
        fs.write_atomic(self._root + _POLICY_FILE, cbor.encode(
            {"v": _FORMAT, "floor": new["version"], "policy": bytes(signed)}))
        self.floor = new["version"]
        self.current = new
        self.name = policy.name(new)
        return self.name

    def threshold(self, key: str) -> int:
        return self.current["thresholds"][key]

    def row(self, no: int):
        return policy.row(self.current, no)


def _unpack(data) -> tuple:
    """(the signed policy, the floor) from the card's policy file."""
    if data[:1] == _COSE_TAG:
        return data, 0
    doc = cbor.decode(data)
    if (not isinstance(doc, dict) or doc.get("v") != _FORMAT
            or not isinstance(doc.get("policy"), bytes)
            or not isinstance(doc.get("floor"), int) or isinstance(doc.get("floor"), bool)):
        raise policy.PolicyError("the policy file is not one this firmware wrote")
    return doc["policy"], doc["floor"]
