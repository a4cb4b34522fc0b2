"""The frame reader's bookkeeping (protocol/framing.py), one rule per test: what it counts,
what noise it keeps for the log, its size limit, and a buffer that stays bounded."""

from __future__ import annotations

import pytest

from protocol import framing
from protocol.framing import FrameDecoder, encode_frame


def test_a_frame_needs_room_for_its_header_and_trailer() -> None:
    assert framing.frame_into(bytearray(5 + framing.OVERHEAD), 5) == 5 + framing.OVERHEAD
    with pytest.raises(framing.FramingError, match="too small"):
        framing.frame_into(bytearray(5 + framing.OVERHEAD - 1), 5)


def test_frames_are_counted_one_each() -> None:
    d = FrameDecoder()
    d.receive_data(encode_frame(b"one") + encode_frame(b"two"))
    assert [d.next_frame(), d.next_frame(), d.next_frame()] == [b"one", b"two", None]
    assert (d.frames, d.bad_frames, d.noise_bytes) == (2, 0, 0)


def test_noise_after_a_frame_is_counted_and_kept_for_the_log() -> None:
    d = FrameDecoder()
    d.receive_data(encode_frame(b"one") + b"hello")
    assert d.next_frame() == b"one"
    assert d.next_frame() is None
    assert (d.noise_bytes, d.take_noise(), d.take_noise()) == (5, b"hello", b"")


def test_a_header_that_fails_its_crc_is_one_bad_frame() -> None:
    d = FrameDecoder()
    head = bytearray(encode_frame(b"payload")[: framing.HEADER_SIZE])
    head[-1] ^= 1
    d.receive_data(bytes(head))  # exactly a header's worth, no more
    assert d.next_frame() is None
    assert (d.bad_frames, d.frames) == (1, 0)


def test_the_log_keeps_the_last_1024_bytes_of_noise() -> None:
    d = FrameDecoder()
    noise = bytes(i % 251 for i in range(3000)).replace(framing.MAGIC[:1], b"\x00")
    d.receive_data(noise)
    assert d.next_frame() is None
    assert d.noise_bytes == 3000 and d.take_noise() == noise[-1024:]


def test_the_default_limit_is_64_kib_and_64_bytes_of_payload() -> None:
    d = FrameDecoder()
    d.receive_data(encode_frame(bytes(65536 + 64)) + encode_frame(bytes(65536 + 65)))
    assert d.next_frame() == bytes(65536 + 64)
    assert d.next_frame() is None and d.bad_frames >= 1 and d.frames == 1


def test_the_buffer_stays_bounded_over_many_frames() -> None:
    d = FrameDecoder()
    frame = encode_frame(bytes(1000))
    for _ in range(200):
        d.receive_data(frame)
        assert d.next_frame() == bytes(1000)
    assert d.buffered() == 0
    assert len(d._buf) <= 2 * len(frame)  # consumed bytes are dropped, not kept


def test_noise_longer_than_the_frame_before_it_is_counted_once() -> None:
    d = FrameDecoder()
    d.receive_data(encode_frame(b"one") + bytes(100))  # more noise than frame: no compaction
    assert d.next_frame() == b"one"
    assert d.next_frame() is None
    assert (d.noise_bytes, d.take_noise()) == (100, bytes(100))
