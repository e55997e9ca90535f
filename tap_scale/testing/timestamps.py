"""Scale's two timestamp spellings, and the ISO 8601 forms a client may send in a query.

Instants are kept as integer microseconds since the Unix epoch, so that comparisons in filters
are exact and cheap; they are only turned into text when a response is rendered.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MICROS_PER_SECOND = 1_000_000
MICROS_PER_MILLI = 1_000

# Date, then optionally a time with optional seconds, fraction and offset. Scale's docs show
# both `2025-01-02T04:00:39.923Z` and `2023-11-07T05:31:56Z`; clients also send `+00:00`.
_ISO_8601 = re.compile(
    r"(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})"
    r"(?:[Tt ](?P<hour>\d{2}):(?P<minute>\d{2})"
    r"(?::(?P<second>\d{2})(?:[.,](?P<fraction>\d{1,9}))?)?"
    r"(?P<offset>[Zz]|[+-]\d{2}(?::?\d{2})?)?)?"
)


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch of an aware datetime.

    Raises:
        ValueError: if the datetime is naive, since its instant would be a guess.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        msg = f"{moment!r} has no timezone; pass an aware datetime (e.g. tzinfo=timezone.utc)"
        raise ValueError(msg)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * MICROS_PER_SECOND + delta.microseconds


def from_micros(micros: int) -> datetime:
    """The aware UTC datetime of an instant in microseconds since the epoch."""
    return _EPOCH + timedelta(microseconds=micros)


def now_micros() -> int:
    """The current instant, cut to the milliseconds Scale renders."""
    micros = to_micros(datetime.now(timezone.utc))
    return micros - micros % MICROS_PER_MILLI


def instant(micros: int, *, precise: bool) -> int:
    """An instant as stored: cut to milliseconds if rendered with a fraction, else to seconds."""
    unit = MICROS_PER_MILLI if precise else MICROS_PER_SECOND
    return micros - micros % unit


def format_timestamp(micros: int, *, fraction: bool = True) -> str:
    """Render an instant as Scale does: `...T04:00:39.923Z`, or `...T05:31:56Z` without fraction.

    Sub-millisecond digits are dropped (Scale shows milliseconds); callers keep instants that are
    rendered without a fraction on whole seconds, so the text always names the stored instant.
    """
    moment = from_micros(micros)
    # Four digits whatever the year: strftime writes the year 999 as "999".
    whole = f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S}"
    if not fraction:
        return f"{whole}Z"
    return f"{whole}.{moment.microsecond // MICROS_PER_MILLI:03d}Z"


def parse_timestamp(text: str) -> int | None:
    """Microseconds since the epoch of an ISO 8601 date or date-time, or None if unparsable.

    A value without an offset is taken as UTC, as Scale stores every timestamp in UTC.
    """
    match = _ISO_8601.fullmatch(text.strip())
    if match is None:
        return None
    parts = match.groupdict()
    fraction = (parts["fraction"] or "").ljust(6, "0")[:6]
    try:
        moment = datetime(
            int(parts["year"]),
            int(parts["month"]),
            int(parts["day"]),
            int(parts["hour"] or 0),
            int(parts["minute"] or 0),
            int(parts["second"] or 0),
            int(fraction),
            tzinfo=_offset(parts["offset"]),
        )
    except ValueError:  # February 30th, hour 25 and the like
        return None
    return to_micros(moment)


def _offset(text: str | None) -> timezone:
    if text is None or text in {"Z", "z"}:
        return timezone.utc
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    sign = -1 if text[0] == "-" else 1
    return timezone(sign * timedelta(hours=hours, minutes=minutes))
