"""Requests and answers over a line that loses frames: the dock's side of protocol/messages.py.

Every request is safe to repeat (device/dock.py answers a repeated state-changing request with
its first answer), so a request whose answer did not come is simply asked again with the same
rid: after a few round trips as measured, waiting longer each time the recorder said nothing
(a slow recorder, or a lost request) but not when the line brought damaged bytes (a noisy
line: the answer came and was lost). A request is given up (TransportError) after
`silence_s` without a byte from the recorder, after `request_cap_s` in all, or at the
docking's deadline `give_up_at`.

A request too large for the line is staged (protocol/messages.py): its payload goes in parts
sized to the line, each acknowledged, all sent before any acknowledgement is awaited, the lost
ones again; then `run` (small, with the request's own rid) is repeated like any request. A
request is staged when the line makes it unlikely to arrive whole, or after a plain try of it
went unanswered. On a clean line nothing is staged.

What comes back teaches the line model (host_agent/dock/fetch.py) too: each answered request
is a frame that arrived whole, each damaged answer one that did not.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import Collection
from typing import Any

from host_agent.dock.fetch import LineModel, best_chunk
from host_agent.transport import Transport, TransportError
from protocol import framing, messages, schema

log = logging.getLogger("bodycam.dock")

DOCKING_BASE_S = 600.0  # a docking's deadline: this, and each download's own on top
STAGE_MIN = 128  # payload bytes below which a request always goes whole
PART_UNKNOWN_LINE = 64  # part size while nothing is known of the line
PART_MAX = 1024
STAGE_OVERHEAD = framing.OVERHEAD + 40  # a part's frame and message fields beyond its data
_WARN_FIRST = 20
_WARN_EVERY = 1000


class SessionError(Exception):
    """The docking cannot go on (unknown device, protocol breach, link lost for good)."""


class DeviceError(SessionError):
    """The recorder answered with an error."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"device answered {code}: {detail}")
        self.code = code


class Exchange:
    def __init__(self, transport: Transport, timeout: float) -> None:
        self.transport = transport
        self.timeout = timeout  # the longest wait for one answer
        self.line = LineModel()  # what is learnt of the line, for the whole docking
        self.request_cap_s = 300.0
        self.give_up_at = time.monotonic() + DOCKING_BASE_S
        self._rid = int.from_bytes(os.urandom(3), "big")  # rids of two sessions never collide
        self._srtt: float | None = None  # smoothed round-trip time of answered requests
        self._warnings = 0
        self.staged = 0  # requests that went in parts

    @property
    def silence_s(self) -> float:
        """A request is given up after this long without a byte from the recorder."""
        return max(30.0, 6 * self.timeout)

    def send(self, mtype: str, rid: int | None = None, **fields: Any) -> int:
        """Send a request (a new rid unless `rid`, for a repeat); return its rid."""
        if rid is None:
            rid = self.next_rid()
        self.transport.send(messages.encode_message(messages.make(mtype, rid=rid, **fields)))
        return rid

    def next_rid(self) -> int:
        self._rid = (self._rid + 1) & schema.U32
        return self._rid

    def await_answer(self, rids: Collection[int], wait: float
                     ) -> tuple[dict[str, Any], int] | None:
        """The next answer to one of `rids` and its size, or None if none came within `wait`
        seconds (what else comes is dropped: late answers, chunks of an earlier read)."""
        deadline = time.monotonic() + wait
        while True:
            remaining = deadline - time.monotonic()
            payload = self.transport.receive(remaining) if remaining > 0 else None
            if payload is None:
                return None
            try:
                kind, body = messages.parse_payload(payload)
            except messages.ProtocolError as exc:
                self.warn("ignored a bad payload from the device: %s", exc)
                continue
            if kind != "msg" or body["rid"] not in rids:
                continue
            if body["t"] == "error":
                raise DeviceError(body["code"], body["detail"])
            return body, len(payload)

    def request(self, mtype: str, timeout: float | None = None, once: bool = False,
                **fields: Any) -> dict[str, Any]:
        """Ask until an answer comes (see the module): given up after `timeout` seconds if
        given. `once`: a single plain try (hello: each answer has a fresh nonce)."""
        t0 = heard_at = time.monotonic()
        limit_s = timeout if timeout is not None else self.request_cap_s
        rid = self.next_rid()
        payload = messages.encode_message(messages.make(mtype, rid=rid, **fields))
        staged: bytes | None = None  # the run request, once the payload is on the recorder
        wait = self.rto()
        tries = 0
        lost_stage = False  # the recorder answered the last run with not_staged
        while True:
            heard = self.transport.bytes_in
            if staged is None and not once and self._stage_it(len(payload), tries):
                staged = self._stage(rid, payload, t0 + limit_s)
            sent_at = time.monotonic()
            self.transport.send(staged or payload)
            tries += 1
            try:
                got = self.await_answer((rid,), max(0.0, min(wait, t0 + limit_s - sent_at)))
            except DeviceError as exc:
                if staged is None or exc.code != messages.E_NOT_STAGED or lost_stage:
                    raise  # twice in a row: it will not run what it acknowledged
                staged, got, lost_stage = None, None, True  # lost it (a new hello?): again
            now = time.monotonic()
            damaged = self.transport.bytes_in != heard
            if got is not None:
                body, size = got
                if tries == 1:
                    self._srtt = (now - sent_at if self._srtt is None
                                  else 0.875 * self._srtt + 0.125 * (now - sent_at))
                self.line.note_frame(len(staged or payload) + size, lost=False)
                return body
            if damaged:
                heard_at = now
                self.line.note_frame(len(staged or payload) + 64, lost=True)
            if (once or now - t0 >= limit_s or now > self.give_up_at
                    or (timeout is None and now - heard_at >= self.silence_s)):
                raise TransportError(f"no answer to {mtype} (request {rid}) in"
                                     f" {now - t0:.1f} s, {tries} tries")
            self.warn("no answer to %s (request %d) yet; asking again", mtype, rid)
            # Nothing came: a slow recorder (or a lost request): wait more. A damaged answer
            # came: the recorder is as quick as ever, ask again as soon.
            wait = self.rto() if damaged else min(self.timeout, wait * 2)

    def rto(self) -> float:
        """How long to wait for an answer before asking again: a few round trips as measured
        so far (the timeout, at most 1 s, until one was), at least 0.05 s."""
        if self._srtt is None:
            return min(self.timeout, 1.0)
        return max(0.05, min(self.timeout, 4 * self._srtt + 0.02))

    def _stage_it(self, size: int, tries: int) -> bool:
        """Whether a request payload of `size` bytes should go in parts: when the line makes
        it more likely lost than not, or after a plain try went unanswered."""
        if size < STAGE_MIN:
            return False
        return tries > 0 or 8 * size * self.line.ber > math.log(2)

    def _stage(self, rid: int, payload: bytes, give_up_at: float) -> bytes:
        """Put `payload` (request `rid`) on the recorder in parts; return the `run` request
        that has it handled. TransportError if the parts do not get through in time."""
        self.staged += 1
        part = (best_chunk(self.line.ber, STAGE_OVERHEAD, hi=PART_MAX) if self.line.ber
                else PART_UNKNOWN_LINE)
        todo = list(range(0, len(payload), part))
        heard_at = time.monotonic()
        while todo:
            heard = self.transport.bytes_in
            sent: dict[int, int] = {}
            for offset in todo:
                sent[self.send("stage", sid=rid, total=len(payload), offset=offset,
                               data=payload[offset:offset + part])] = offset
            wait = self.rto() + len(todo) * (part + STAGE_OVERHEAD) / 10_000
            while sent:
                got = self.await_answer(sent, wait)
                if got is None:
                    break
                sent.pop(got[0]["rid"])
                wait = self.rto()
            todo = sorted(sent.values())
            now = time.monotonic()
            if self.transport.bytes_in != heard:
                heard_at = now
            if todo and (now > give_up_at or now > self.give_up_at
                         or now - heard_at >= self.silence_s):
                raise TransportError(f"request {rid} could not be staged: {len(todo)} parts"
                                     " never acknowledged")
        return messages.encode_message(messages.make(
            "run", rid=rid, sha256=hashlib.sha256(payload).digest()))

    def warn(self, fmt: str, *args: Any) -> None:
        """A warning about what the recorder sent or did not: all of the first few per
        docking, then one in a thousand (a bad peer must not fill the dock's disk with logs)."""
        self._warnings += 1
        if self._warnings <= _WARN_FIRST or self._warnings % _WARN_EVERY == 0:
            log.warning(fmt + " (warning %d of this docking)", *args, self._warnings)
