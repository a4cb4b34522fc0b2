"""The recorder core: camera bytes into segments, each hashed, signed and chained.

A segment is written to a `.part` file while it records, hashed as it goes (never read back),
then sealed: its manifest names the device, sequence, previous record's hash, the segment's
SHA-256 and size, start/end time, clock state, tracks and policy, and is signed on the device.
"""

import hashlib

from device import FIRMWARE_VERSION
from protocol import cose, manifest

try:
    from micropython import const
except ImportError:

    def const(x):  # type: ignore[no-redef,misc]
        return x


CHUNK_SIZE = const(8192)  # camera bytes per write: small, it lives in the heap for good


class Recorder:
    def __init__(self, hal, store, key, clock, log, policy: str = manifest.DEFAULT_POLICY,
                 buf=None) -> None:
        self.hal = hal
        self.store = store
        self.key = key
        self.clock = clock
        self.policy = policy
        self._log = log
        # One buffer for the recorder's whole life (boot code may allocate it early).
        self._buf = buf if buf is not None else bytearray(CHUNK_SIZE)

    async def record_segment(self, seconds_ms: int) -> int:
        """Record one segment of `seconds_ms` milliseconds; return its sequence number."""
        seq = self.store.head_seq + 1
        part = self.store.path(seq, ".part")
        camera = self.hal.camera
        mv = memoryview(self._buf)
        digest = hashlib.sha256()
        size = 0
        clock_state = self.clock.describe()
        t_start = self.clock.now_us()
        t_stop = t_start + seconds_ms * 1000
        self.hal.indicator.show("recording")
        camera.start()
        with open(part, "wb") as f:
            while self.clock.now_us() < t_stop:
                n = await camera.read_into(self._buf)
                chunk = mv[:n]
                digest.update(chunk)
                f.write(chunk)
                size += n
        camera.stop()
        t_end = self.clock.now_us()
        self.hal.indicator.show("idle")
        self.seal(seq, part, digest.digest(), size, t_start, t_end, clock_state, False)
        return seq

    def seal(self, seq, part, sha, size, t_start, t_end, clock_state, truncated) -> bytes:
        fields = {
            "v": manifest.FORMAT_VERSION,
            "kind": manifest.KIND_SEGMENT,
            "device_id": self.hal.device_id,
            "seq": seq,
            "prev": self.store.head_hash,
            "policy": self.policy,
            "fw": FIRMWARE_VERSION,
            "sha256": sha,
            "size": size,
            "t_start": t_start,
            "t_end": t_end,
            "clock": clock_state,
            "tracks": list(self.hal.camera.tracks),
            "truncated": truncated,
        }
        record = cose.sign1(manifest.encode(fields), self.key.kid, self.key.sign)
        self.store.add(seq, part, record)
        self._log("sealed segment %d: %d bytes" % (seq, size))
        return record
