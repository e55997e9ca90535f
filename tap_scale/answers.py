"""Reading Scale's responses: bodies, error texts, the waits Scale asks for, and Scale's clock.

Everything here reads a response defensively: a body that is not strict JSON is read leniently
when it can be, a header that cannot be read is ignored rather than trusted, and a number too
large for Python's clock never reaches it.
"""

from __future__ import annotations

import codecs
import json
import logging
import math
import threading
import typing as t
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import urlparse

import msgspec
from requests import PreparedRequest
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError

from tap_scale.redaction import redact

if t.TYPE_CHECKING:
    from collections.abc import Callable

    import requests

_ERROR_TEXT_LIMIT = 200
# How deep a failed request's chain of causes is followed for the one a person can act on.
_CAUSES_FOLLOWED = 10
# Invalid characters named one by one in a warning, then counted.
_NAMED_REPAIRS = 5
# Items of a records list that are not records, shown this long in the warning that skips them.
_ITEM_SHOWN = 80
# Scale's clock is mentioned in the log once it differs from this machine's by this much, and
# warned about beyond the second: a Date that far off may be a proxy's, not Scale's.
NOTABLE_SKEW = timedelta(seconds=2)
SUSPECT_SKEW = timedelta(hours=1)


class ScaleAPIError(FatalAPIError):
    """A request Scale refused, or a response the tap cannot use; the message says what to do."""

    def __init__(self, message: str, status_code: int | None = None, scale_text: str = "") -> None:
        """Keep the HTTP status and Scale's own error text beside the message for callers."""
        super().__init__(message)
        self.status_code = status_code
        self.scale_text = scale_text


def scale_error_text(response: requests.Response) -> str:
    """Scale's own error text from an error response, or the start of whatever body came back."""
    try:
        body = response.json()
    except (ValueError, RecursionError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return redact(str(body["error"]))
    # Not Scale's JSON error shape: a proxy's HTML page, say. Enough of it to recognise, masked
    # before it is cut, so that a secret the page quotes cannot survive in part.
    text = redact(" ".join(response.text.split())) or "(empty body)"
    return text if len(text) <= _ERROR_TEXT_LIMIT else text[:_ERROR_TEXT_LIMIT] + "..."


def network_failure(error: BaseException) -> str:
    """A request that got no answer, as a log line names it: "ConnectionError (Connection refused)".

    requests wraps the cause several times over (urllib3's retries, its pool, the socket): the
    innermost is what a person can act on, a port nothing listens on or a peer that hung up.
    """
    cause, seen = error, 0
    while seen < _CAUSES_FOLLOWED:
        reason = getattr(cause, "reason", None)
        inner = next(
            (
                candidate
                for candidate in (
                    reason,
                    cause.args[0] if cause.args else None,
                    cause.__cause__,
                    cause.__context__,
                )
                if isinstance(candidate, BaseException)
            ),
            None,
        )
        if inner is None:
            break
        cause, seen = inner, seen + 1
    if cause is error:
        return type(error).__name__
    said = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(cause)
    return f"{type(error).__name__} ({redact(said.strip() or type(cause).__name__)})"


def describe_request(response: requests.Response | requests.PreparedRequest) -> str:
    """Method, path and query of a request, or of the one behind a response (never the key)."""
    request = response if isinstance(response, PreparedRequest) else response.request
    url = urlparse(str(request.url))
    query = f"?{url.query}" if url.query else ""
    return f"{request.method} {url.path}{query}"


# --- Bodies -------------------------------------------------------------------------------------


def page_body(
    response: requests.Response,
    warn: Callable[[str], None] | None = None,
    fast: Callable[[bytes], dict[str, t.Any] | None] | None = None,
) -> dict[str, t.Any]:
    """The JSON object a Scale response carries, parsed once per response.

    ``fast`` is tried first where a stream parses its pages in a faster shape of its own
    (`tap_scale.reading.task_pages`); a body it returns None for is parsed the usual way.

    Parsed strictly (msgspec) when it can be; a body that strict parsing refuses but that is
    JSON to a lenient reader (a lone UTF-16 surrogate escape, bytes that are not UTF-8, NaN) is
    read leniently, its unusable characters replaced by U+FFFD, and ``warn`` is told where. Such
    a body would be refused the same way on every try, so retrying it could never succeed.

    Raises:
        RetriableAPIError: If the body is not JSON at all (cut short, an HTML page).
        ScaleAPIError: If it is JSON but not an object.
    """
    cached = response.__dict__.get("_scale_body")
    if cached is not None:
        return t.cast("dict[str, t.Any]", cached)
    # A byte order mark, which some servers and proxies put before JSON: no strict JSON
    # reader takes it, and it says nothing, so it goes.
    content = response.content.removeprefix(codecs.BOM_UTF8)
    if fast is not None and (shaped := fast(content)) is not None:
        response.__dict__["_scale_body"] = shaped
        return shaped
    try:
        body = msgspec.json.decode(content)
    except RecursionError:
        # JSON nested deeper than any Python parser can go (msgspec's and json's limits are
        # both about a thousand levels): the same answer fails the same way on every try.
        msg = (
            f"Scale answered {describe_request(response)} with JSON nested deeper than Python "
            "can read (about a thousand levels; a task's `metadata` perhaps). Nothing after it "
            "in that partition can be read. Ask Scale support to look at those tasks; meanwhile "
            "leave that project or batch out of the settings (`project_ids`, `batch_ids`, ...) "
            "so that the rest syncs."
        )
        raise ScaleAPIError(msg) from None
    except ValueError as strict_error:  # msgspec's DecodeError is a ValueError
        body, repairs = _lenient_json(content)
        if body is None:
            msg = (
                f"Scale answered {describe_request(response)} with HTTP {response.status_code} "
                f"but a body that is not JSON ({strict_error}): {scale_error_text(response)}"
            )
            raise RetriableAPIError(msg, response) from strict_error
        if warn is not None:
            warn(_repairs_message(response, body, strict_error, repairs))
    if not isinstance(body, dict):
        msg = (
            f"Scale answered {describe_request(response)} with a JSON "
            f"{type(body).__name__} where an object was expected."
        )
        raise ScaleAPIError(msg)
    response.__dict__["_scale_body"] = body
    return t.cast("dict[str, t.Any]", body)


def _lenient_json(content: bytes) -> tuple[t.Any, list[tuple[str | int, ...]]]:
    """The body as Python's own reader takes it, repaired; None if it is not JSON at all."""
    try:
        body = json.loads(content.decode("utf-8", errors="replace"))
    except ValueError:
        return None, []
    return body, repair_strings(body)


def repair_strings(body: t.Any) -> list[tuple[str | int, ...]]:  # noqa: ANN401 - any JSON
    """Replace lone surrogates (which no UTF-8 output can hold) in place; return their paths.

    Iterative, so that however deeply a body nests, this never overflows Python's stack.
    """
    repaired: list[tuple[str | int, ...]] = []
    stack: list[tuple[t.Any, tuple[str | int, ...]]] = [(body, ())]
    while stack:
        node, path = stack.pop()
        entries = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        for key, value in entries:
            if isinstance(key, str) and not _encodable(key):
                del node[key]
                node[_repaired(key)] = value
                repaired.append((*path, _repaired(key)))
                key = _repaired(key)  # noqa: PLW2901 - the repaired key is the one kept
            if isinstance(value, str) and not _encodable(value):
                node[key] = _repaired(value)
                repaired.append((*path, key))
            elif isinstance(value, (dict, list)):
                stack.append((value, (*path, key)))
    return repaired


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _repaired(text: str) -> str:
    # Surrogate pairs were joined by the reader, so every surrogate left is alone.
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _repairs_message(
    response: requests.Response,
    body: t.Any,  # noqa: ANN401
    error: BaseException,
    repairs: list[tuple[str | int, ...]],
) -> str:
    named = [_json_path(body, path) for path in repairs[:_NAMED_REPAIRS]]
    more = f" and {len(repairs) - _NAMED_REPAIRS} more" if len(repairs) > _NAMED_REPAIRS else ""
    where = (
        f"unusable characters replaced by U+FFFD in {', '.join(named)}{more}"
        if repairs
        else "nothing needed replacing"
    )
    return (
        f"Scale answered {describe_request(response)} with a body that is not strict JSON "
        f"({error}); it was read leniently: {where}."
    )


def _json_path(body: t.Any, path: tuple[str | int, ...]) -> str:  # noqa: ANN401
    """A path like ``tasks[3].metadata.note``, naming the record by its id where it has one."""
    text, node = "", body
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            record_id = _record_id(node) if len(text.split(".")) == 1 else None
            if record_id is not None:
                text += f" ({record_id})"
        else:
            text += f".{part}" if text else part
            node = node.get(part) if isinstance(node, dict) else None
    return text


def _record_id(node: object) -> str | None:
    if isinstance(node, dict):
        for key in ("task_id", "id"):
            if isinstance(node.get(key), str):
                return f"{key} {node[key]}"
    return None


def usable_records(
    items: list[t.Any],
    id_key: str,
    where: str,
    warn: Callable[[str], None],
) -> t.Iterator[dict[str, t.Any]]:
    """The items of a records list that are records: objects carrying their id.

    Anything else (a null, a string, an object without its id) cannot be told apart from
    another, so cannot be upserted: it is skipped with a warning naming it and where it was,
    rather than stopping every sync at the same page.
    """
    for index, item in enumerate(items):
        if isinstance(item, dict) and isinstance(item.get(id_key), str) and item[id_key]:
            yield item
            continue
        shown = repr(item) if not isinstance(item, dict) else json.dumps(item, default=str)
        if len(shown) > _ITEM_SHOWN:
            shown = shown[:_ITEM_SHOWN] + "..."
        problem = f"an object without its `{id_key}`" if isinstance(item, dict) else "not an object"
        warn(f"Skipped item {index} of {where}: {problem}: {shown}")


# --- Retry-After --------------------------------------------------------------------------------


def retry_after_header(response: requests.Response | None) -> str | None:
    """The ``Retry-After`` header of a response, as sent, if it has one."""
    value = response.headers.get("Retry-After") if response is not None else None
    return value.strip() or None if isinstance(value, str) else None


def retry_after_seconds(
    response: requests.Response | None, now: datetime | None = None
) -> float | None:
    """The wait a response asks for in its ``Retry-After`` (seconds or an HTTP date), if any.

    Never raises, whatever the header holds: a wait too long to represent is ``math.inf``
    (callers cap it), an unreadable header is None. An HTTP date is in the server's clock, so it
    is read against ``now``, by default the response's own ``Date`` (else this machine's clock).
    """
    value = retry_after_header(response)
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return None if math.isnan(seconds) else max(0.0, seconds)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None  # unreadable: fall back to exponential backoff
    if moment.tzinfo is None:  # "-0000": UTC, by RFC 5322
        moment = moment.replace(tzinfo=timezone.utc)
    now = now or _date_header(response) or datetime.now(timezone.utc)
    # As timestamps: a difference of datetimes could overflow near the year 9999.
    return max(0.0, moment.timestamp() - now.timestamp())


def _date_header(response: requests.Response | None) -> datetime | None:
    value = response.headers.get("Date") if response is not None else None
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


# --- Scale's clock ------------------------------------------------------------------------------


class ServerClock:
    """Scale's clock, as the ``Date`` headers of its responses tell it.

    A sync's upper bound (``completed_before``) is compared with timestamps Scale's clock wrote.
    Taken from this machine's clock, a clock ahead of Scale's would put tasks completing during
    the sync inside the bound, where one on a page already read would be missed for good. So the
    bound is never later than Scale's time: where a ``Date`` proves Scale's clock behind, the
    bound is taken from it (erring early, the safe side: a ``Date`` has whole seconds and is
    stamped before the response travels); where it agrees with this machine's clock to within
    its precision, this machine's clock is finer, and kept.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        """Start knowing nothing of Scale's clock: until a response says, this machine's."""
        self._offset = 0.0  # seconds to add to this machine's clock; never positive
        self._logger = logger or logging.getLogger("tap-scale")
        self._told = False
        self._lock = threading.Lock()

    def observe(self, response: requests.Response) -> None:
        """Note Scale's time from a response's ``Date`` header, if it has a readable one."""
        received = datetime.now(timezone.utc).timestamp()
        moment = _date_header(response)
        if moment is None:
            return
        stamped = moment.timestamp()
        sent = received - response.elapsed.total_seconds()
        # Scale stamped the Date between sending and receiving, within the second it names.
        behind = sent - (stamped + 1)
        offset = stamped - received if behind > 0 else 0.0
        notable = max(behind, stamped - received)
        with self._lock:
            self._offset = offset
            tell = not self._told and notable >= NOTABLE_SKEW.total_seconds()
            self._told |= tell
        if tell:
            self._tell(stamped - received)

    def _tell(self, skew: float) -> None:
        suspect = abs(skew) >= SUSPECT_SKEW.total_seconds()
        self._logger.log(
            logging.WARNING if suspect else logging.INFO,
            "Scale's clock is %.0f s %s this machine's (the Date header of its answers); a sync "
            "reads tasks up to the earlier of the two clocks%s",
            abs(skew),
            "behind" if skew < 0 else "ahead of",
            ", so tasks Scale completed since then wait for a later run. If that Date is not "
            "Scale's (a proxy's), set the proxy's clock right"
            if suspect and skew < 0
            else "",
        )

    def now(self) -> datetime:
        """The current time, never later than Scale's clock as last seen."""
        local = datetime.now(timezone.utc)
        try:
            return local + timedelta(seconds=self._offset)
        except OverflowError:  # a Date header from before the year 1
            return datetime.min.replace(tzinfo=timezone.utc)
