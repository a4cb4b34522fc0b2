"""Commissioning, run on the recorder itself through its REPL (`bodycam device commission`).

    from device import commission; commission.run("card", "<unit public key, 64 hex>")

Makes the device key if there is none (the seed is born here, from the board's random source,
and never leaves), stores the unit's public key where the firmware reads it at every boot
(`unit.pub` in the storage root, device/policy_store.py; a recorder already commissioned to
another unit refuses), and prints one line: the device key's id in hex, the fingerprint the
dock's `bodycam enroll --expect-fingerprint` checks. Nothing else is printed; the seed is never
read back.

The seed is kept where the board keeps it: `seeds`, the board's seed store (read() and
write_once(seed), device/keystore.py; e.g. the ESP32-S3's NVS), or, without one, a file in the
storage root (keystore.FileSeedStore), as the unix-port simulation keeps it.
"""

from binascii import hexlify, unhexlify

from device import fs


def _quiet(text: str) -> None:
    pass


def run(root: str, unit_key_hex: str, seeds=None) -> None:
    from device.keystore import DeviceKey
    from device.policy_store import PolicyStore

    unit = unhexlify(unit_key_hex)
    if len(unit) != 32:
        raise ValueError("the unit key must be 32 bytes (64 hex digits)")
    fs.makedirs(root)
    PolicyStore(root, _quiet).commission(unit)  # first: another unit's recorder stays as it is
    key = DeviceKey.load_or_create(root, _quiet, seeds=seeds)
    print(hexlify(key.kid).decode())
