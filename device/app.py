"""The recorder's start-up, the same on every board: from a board's parts to a running recorder.

A board's entry point (device/boards/<name>/main.py) reads its configuration, builds its `Hal`
and its dock link, and calls `boot` then `serve`; nothing here knows which board it runs on.

Boot order matters on a small heap: the board allocates the link's and the camera's buffers
first and loads the key (with its 24 KB signing table) while large free blocks still exist;
`serve` allocates the rest.

The heap stays whole by collecting early: `serve` has the garbage collector run every
`gc_every` bytes allocated (gc.threshold), not only when an allocation fails. MicroPython's
collector does not move objects, and the allocator takes the lowest free blocks that fit, so
between collections allocation climbs through the free heap; whatever is still alive at a
collection (the pre-event ring, a meta, a dock's answers) stays where it was placed. Waiting
for the heap to run out places such objects all over it, and over a shift a 256 KB heap with
50 KB free had no free run longer than 2 KB (a listing for the dock needs 5); collecting every
16 KB keeps them in the lowest part of the free heap and the rest in one piece. A collection
costs ~0.15 ms on the unix port's 256 KB heap; signing (~250 KB of big-int temporaries) and
checking a signature (~1.1 MB) account for most of the allocation.
"""

import asyncio
import gc

from device.recorder import CHUNK_SIZE
from protocol.compat import const

GC_EVERY = const(16384)  # bytes allocated between collections (see above)


def camera_buffer():
    """The recorder's one camera buffer, for a board to allocate early."""
    return bytearray(CHUNK_SIZE)


def load_key(root: str, log, seeds=None):
    """The device key; its seed in `seeds` (a board's secure storage) or, by default, a file
    in the device's storage (device/keystore.py)."""
    from device.keystore import DeviceKey

    return DeviceKey.load_or_create(root, log, seeds=seeds)


def boot(hal, key, log, *, root: str, camera_buf=None, unit_key: bytes = b"",
         pre_event_s: int = -1, segment_ms: int = 60000, reset_cause: str = "",
         spare: int = 0):
    """Open the card's stores and recover from whatever the last power cut left; returns the
    recorder (its `store`, `clock` and `policies` with it). The same path at every boot, on
    every board (and in tests/mpy/crash_points.py, which reboots it at every crash point)."""
    from device.clock import ClockService
    from device.policy_store import PolicyStore
    from device.recorder import Recorder
    from device.store import RecordStore

    # The watchdog is fed after each step, and within the long ones (the store's listings and
    # hashes, the salvage) per unit of progress: a big card's recovery can outlast its
    # timeout, and a board that resets during every boot never records again.
    feed = hal.watchdog.feed if hal.watchdog is not None else None
    if feed:
        feed()
    policies = PolicyStore(root, log)  # verifies the stored policy's signature
    if unit_key:
        policies.commission(unit_key)
    if pre_event_s >= 0:
        policies.current["thresholds"]["pre_event_s"] = pre_event_s
    if feed:
        feed()
    if camera_buf is None:
        camera_buf = camera_buffer()
    # One buffer for both; opening the store finds the chain head and finishes what a cut left.
    store = RecordStore(root, spare=spare, buf=camera_buf, feed=feed)
    clock = ClockService(hal.clock, root)
    recorder = Recorder(hal, store, key, clock, policies, log, buf=camera_buf,
                        segment_ms=segment_ms, reset_cause=reset_cause)
    log("booted %s, chain head %d, policy %s" % (hal.device_id, store.head_seq, policies.name))
    if feed:
        feed()
    recorder.recover()
    if feed:
        feed()
    return recorder


async def serve(hal, link, key, log, *, root: str, camera_buf=None, unit_key: bytes = b"",
                pre_event_s: int = -1, segments: int = 0, segment_ms: int = 60000,
                ui=None, reset_cause: str = "", gc_every: int = GC_EVERY) -> None:
    """Recover from a crash, record `segments` at boot (a script for demos and tests), then
    record on request and answer the dock until the power goes.

    `root` is the card's directory for the record store, clock, policy; `unit_key` the unit's
    public key when the recorder is commissioned now; `ui` an object with
    `await next_action() -> (action, args)` (the buttons and menu), or None; `reset_cause`
    what the board knows of why it last reset ("watchdog"), "" for a power-on; `gc_every`
    the bytes allocated between collections (0: only when the heap runs out).
    """
    from device.dock import DockServer

    if gc_every > 0:
        gc.collect()
        gc.threshold(gc_every)

    recorder = boot(hal, key, log, root=root, camera_buf=camera_buf, unit_key=unit_key,
                    pre_event_s=pre_event_s, segment_ms=segment_ms, reset_cause=reset_cause)
    asyncio.create_task(recorder.run())
    if segments > 0:
        await recorder.record_segments(segments)
    if ui is not None:
        asyncio.create_task(_ui(ui, recorder, log))
    server = DockServer(link, hal, recorder.store, key, recorder.clock, log,
                        policies=recorder.policies, recorder=recorder)
    log("ready for the dock")
    await server.serve()


async def _ui(ui, recorder, log) -> None:
    """The buttons and menu drive the recorder; each answer goes to the log."""
    from device.recorder import Refused

    while True:
        action, args = await ui.next_action()
        if not action:
            continue
        try:
            log("ui: %s -> %s" % (action, recorder.handle(action, args)))
        except Refused as exc:
            log("ui: %s" % exc)
        except OSError as exc:  # a full card: the action's record could not be written
            log("ui: %s failed: storage: %s" % (action, exc))
