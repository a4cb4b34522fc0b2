"""Times as the custody functions read and write them: the vault's UTC ISO-8601 text and the
recorders' microseconds since 1970 (their clock, once a dock set it)."""

from __future__ import annotations

from datetime import UTC, datetime

from host_agent.custody.register import CustodyError


def parse(text: str) -> int:
    """µs since 1970 of "2026-05-01", "2026-05-01T08:30", "2026-05-01T08:30:00Z", … (UTC
    unless the text names another offset)."""
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CustodyError(f"{text!r} is not a date or time (2026-05-01, 2026-05-01T08:30Z)"
                           ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(t.timestamp() * 1_000_000)


def iso(us: int | None) -> str | None:
    """The vault's form of a time in µs (None stays None)."""
    if us is None:
        return None
    return datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_us() -> int:
    return int(datetime.now(UTC).timestamp() * 1_000_000)
