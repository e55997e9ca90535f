"""The one HTTP client for Scale's v2 API: requests, auth, pagination, what each status means."""

from __future__ import annotations

import random
import sys
import typing as t
from datetime import datetime, timedelta, timezone
from functools import cached_property
from http import HTTPStatus

import backoff
from singer_sdk import RESTStream, metrics
from singer_sdk.authenticators import BearerTokenAuthenticator
from singer_sdk.exceptions import RetriableAPIError
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.pagination import BaseAPIPaginator
from singer_sdk.singerlib.catalog import REPLICATION_INCREMENTAL

from tap_scale import settings, transport
from tap_scale.answers import (
    ScaleAPIError,
    ServerClock,
    describe_request,
    network_failure,
    page_body,
    retry_after_header,
    retry_after_seconds,
    scale_error_text,
    usable_records,
)
from tap_scale.models import UNKNOWN_FIELDS, Columns, format_timestamp, parse_timestamp
from tap_scale.sdk_logging import quiet

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

if t.TYPE_CHECKING:
    from collections.abc import Generator

    import requests
    from backoff.types import Details
    from singer_sdk.helpers.types import Context
    from singer_sdk.tap_base import Tap

    from tap_scale.progress import SyncProgress
    from tap_scale.reading.throttle import Throttle
    from tap_scale.selection import Selection
    from tap_scale.tap import TapScale

# Also where these were defined before `answers` (other modules import them from here).
__all__ = [
    "DEFAULT_API_URL",
    "NextTokenPaginator",
    "ScaleAPIError",
    "ScaleStream",
    "describe_request",
    "page_body",
    "retry_after_seconds",
    "scale_error_text",
]

DEFAULT_API_URL = settings.DEFAULT_API_URL
DEFAULT_MAX_TRIES = 8
DEFAULT_REQUEST_TIMEOUT = 120
# The longest single wait between tries, whatever a Retry-After asks: a scheduled sync should
# not sleep for hours on one header (an hour asked eight times over is a working day).
DEFAULT_MAX_RETRY_WAIT = 300
# Repairs of unexpected data are logged one by one up to this many per stream, then summarised,
# so a drifted field in every record does not drown the log.
LOGGED_REPAIRS = 20
# Exponential backoff between tries: 1, 2, 4, ... seconds, never more than a minute, each drawn
# at random below that ceiling ("full jitter"), so that many clients do not retry in step.
BACKOFF_CEILING = 60

# A server answering page after page with no records but a next_token holds a sync forever, each
# token new; Scale sends an empty page now and then, never this many in a row.
MAX_EMPTY_PAGES = 100

# Scale's `*_after` filters are strict and its timestamps have millisecond precision: asking for
# what came after (lower bound - 1 ms) includes everything exactly at the lower bound.
TIE_MARGIN = timedelta(milliseconds=1)

# Scale documents 429 and 500; the rest are what proxies and load balancers in front of any API
# answer while it is overloaded or restarting. All of them mean "the same request may succeed".
RETRIABLE_STATUSES = frozenset({429, 500, 502, 503, 504})

# What a person should do about each fatal status, appended to Scale's own error text.
FATAL_ADVICE: dict[int, str] = {
    HTTPStatus.BAD_REQUEST: "Scale rejected the request's parameters; check the tap's settings "
    "(dates, page_size, opts, task_statuses).",
    HTTPStatus.UNAUTHORIZED: "Scale rejected the API key. Check the `api_key` setting: it must be "
    "a current key from Scale's dashboard, a live_... key for production projects or a test_... "
    "key for test projects.",
    HTTPStatus.PAYMENT_REQUIRED: "Scale refuses this account's requests for billing reasons; "
    "contact your Scale account team.",
    HTTPStatus.FORBIDDEN: "Scale rejected the API key for this resource. Check the `api_key` "
    "setting and that the key's team can see the configured projects.",
    HTTPStatus.NOT_FOUND: "Check the configured project, batch or delivery ids and names: the "
    "API key's team must be able to see them.",
}


class NextTokenPaginator(BaseAPIPaginator[str | None]):
    """Follows Scale's opaque ``next_token`` until a page comes back without one."""

    def __init__(self) -> None:
        """Start before the first page, which takes no token."""
        super().__init__(None)
        # Every token seen, not just the last: a cycle of two or more pages would otherwise
        # loop forever. Tokens are short, so this stays small even for huge projects.
        self._seen_tokens: set[str] = set()
        # The empty pages in a row so far, and the number of the last one.
        self._empty_pages = 0
        self._last_empty = -2

    @override
    def get_next(self, response: requests.Response) -> str | None:
        token = page_body(response).get("next_token") or None
        if token is None:
            return None
        if not isinstance(token, str):
            msg = (
                f"Scale returned a next_token that is not a string ({type(token).__name__}) "
                f"after page {self.count} of {describe_request(response)}. The API may have "
                "changed; report this to tap-scale's maintainers."
            )
            raise ScaleAPIError(msg)
        if token in self._seen_tokens:
            msg = (
                f"Scale returned a next_token it had already returned, after page "
                f"{self.count} of {describe_request(response)}; following it would loop "
                "forever. Run the sync again; if it recurs, report it to Scale support."
            )
            raise ScaleAPIError(msg)
        self._seen_tokens.add(token)
        return token

    @override
    def continue_if_empty(self, response: requests.Response) -> bool:
        # Scale may send an empty page that still carries a token: more pages follow.
        if not page_body(response).get("next_token"):
            return False
        if self._last_empty != self.count - 1:
            self._empty_pages = 0
        self._empty_pages += 1
        self._last_empty = self.count
        if self._empty_pages >= MAX_EMPTY_PAGES:
            msg = (
                f"Scale answered {self._empty_pages} pages in a row of "
                f"{describe_request(response)} with no records, each naming a next page; "
                "following them could go on forever. Run the sync again later (it resumes "
                "from the last state); if it recurs, report it to Scale support."
            )
            raise ScaleAPIError(msg)
        return True


class ScaleStream(RESTStream[str | None]):
    """Base for every Scale stream: one place builds, authenticates and checks requests."""

    #: The key of the response body that holds this stream's records, e.g. "tasks".
    records_key: str = ""
    #: Fields holding another Scale object's id, which Scale expands into the object on request.
    id_fields: t.ClassVar[tuple[str, ...]] = ()

    # The SDK's own conformance walks every nested value of every record, which cost half of a
    # sync's CPU, and even limited to the top level a fifth. Scale's records are parsed JSON, so
    # their values are JSON already; the top level, which becomes columns, is conformed by
    # `Columns.conform` from a reading of the schema made once (`columns`).
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE

    #: The field holding the id of each of this stream's objects as Scale sends them.
    id_key: str = "id"

    _repairs_logged = 0

    @override
    def __init__(self, tap: Tap, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(tap, *args, **kwargs)
        quiet(self.logger)

    @property
    def scale_tap(self) -> TapScale:
        """The tap this stream belongs to: what every stream of a sync shares."""
        # The SDK keeps the tap as `Stream._tap` (tests/test_sdk_coupling.py guards it).
        return t.cast("TapScale", self._tap)

    @property
    def progress(self) -> SyncProgress:
        """The sync's progress, shared by every stream."""
        return self.scale_tap.progress

    @property
    def throttle(self) -> Throttle:
        """The slots of requests in flight, shared by every stream and reader of a sync."""
        return self.scale_tap.throttle

    @override
    def get_record_counter(
        self, *, endpoint: str | None = None, log_interval: float = metrics.DEFAULT_LOG_INTERVAL
    ) -> metrics.Counter:
        counter = super().get_record_counter(endpoint=endpoint, log_interval=log_interval)
        return self.progress.counter(self.name, counter)

    @override
    def log_sync_costs(self) -> None:
        # The SDK calls this once per stream as the whole sync ends: the last call logs the
        # sync's summary.
        super().log_sync_costs()
        self.progress.ended(self.name, streams=len(self.scale_tap.streams))

    @override
    def post_process(
        self,
        row: dict[str, t.Any],
        context: Context | None = None,
    ) -> dict[str, t.Any] | None:
        """Emit ids for related objects, one timestamp form, and columns of the schema's types."""
        for field in self.id_fields:
            # An expanded object where an id is expected (never asked for, but cheap to undo).
            if isinstance(row.get(field), dict):
                row[field] = row[field].get("id")
        if self.replication_key:
            # The SDK reads the replication key from every record; Scale omits it when unset.
            row.setdefault(self.replication_key, None)
        columns = self.columns
        known = len(columns.unknown)
        for change in columns.conform(row):
            self._log_repair(row, change)
        if len(columns.unknown) > known and columns.keeps_unknown:
            # Scale grew a field: said once per field, as news rather than a fault.
            self.logger.info(
                "Scale sends %s records a top-level field this release of tap-scale does not "
                "know (%s): kept, as sent, in their %s column.",
                self.name,
                ", ".join(list(columns.unknown)[known:]),
                UNKNOWN_FIELDS,
            )
        return row

    @cached_property
    def columns(self) -> Columns:
        """The top-level fields of the effective schema, read once for every `post_process`.

        The effective schema is the catalog's where a catalog overrides the stream's own: the
        target receives that one, so records are conformed to it.
        """
        return Columns(self.effective_schema)

    def _log_repair(self, row: dict[str, t.Any], change: str) -> None:
        self._repairs_logged += 1
        if self._repairs_logged <= LOGGED_REPAIRS:
            key = ", ".join(str(row.get(name)) for name in self.primary_keys)
            self.logger.warning("Unexpected data in %s record %s: %s", self.name, key, change)
        if self._repairs_logged == LOGGED_REPAIRS:
            self.logger.warning("Further repairs of %s records are not logged", self.name)

    @override
    @property
    def url_base(self) -> str:
        return str(self.config.get("api_url", DEFAULT_API_URL)).rstrip("/")

    @override
    @cached_property
    def authenticator(self) -> BearerTokenAuthenticator:
        return BearerTokenAuthenticator(token=self.config["api_key"])

    @override
    @property
    def http_headers(self) -> dict[str, str]:
        return {"Accept": "application/json"}

    @property
    def selection(self) -> Selection:
        """What this sync covers, resolved once for the whole tap."""
        return self.scale_tap.selection

    @property
    def server_clock(self) -> ServerClock:
        """Scale's clock, read from the Date header of every response, shared by every stream."""
        return self.scale_tap.server_clock

    @cached_property
    def sync_started_at(self) -> datetime:
        """Upper bound of incremental requests: what happens during a sync is the next run's.

        In Scale's time (see `ServerClock`), read once the sync's scope is resolved, so that
        Scale's clock is known from a response by then.
        """
        _ = self.selection
        return self.server_clock.now()

    @property
    def start_date(self) -> datetime | None:
        """The ``start_date`` setting, as a moment."""
        start_date = self.config.get("start_date")
        return parse_timestamp(str(start_date)) if start_date else None

    @override
    def get_replication_key_signpost(self, context: Context | None = None) -> str | None:
        """The upper bound this sync asks Scale for, which no bookmark may pass.

        The SDK caps a partition's bookmark at this signpost once the partition is read, so a
        record stamped later than the sync asked for (a server ignoring ``completed_before``,
        a clock gone wrong) cannot move the bookmark past records not yet read. It is in the
        form the tap emits timestamps in, so that the SDK's comparison of the two strings is
        a comparison of moments.
        """
        # Only a moment can be capped by a moment: a bookmark that is an id (response_schemas
        # marks a stored schema by its id) compares as a string and would be overwritten.
        if (
            not self.replication_key
            or self.replication_method != REPLICATION_INCREMENTAL
            or not self.is_timestamp_replication_key
        ):
            return None
        return format_timestamp(self.sync_started_at)

    def cap_bookmark(self, context: Context | None) -> None:
        """Give this partition the signpost its bookmark is capped at, as it starts being read.

        The SDK writes the signpost only where a sync starts (the stream, for streams whose
        partitions it syncs in one go), so each partition gets its own here.
        """
        if context is not None and (signpost := self.get_replication_key_signpost(context)):
            self.state_manager.write_replication_key_signpost(signpost, context=context)

    def lower_bound(
        self,
        context: Context,
        lookback: timedelta = timedelta(0),
        *,
        now: datetime | None = None,
    ) -> datetime | None:
        """Where a partition's incremental read starts, for Scale's strict ``*_after`` filters.

        The partition's bookmark less ``lookback``, or ``start_date`` if that is later, or None
        on a first run without a ``start_date``; then one tie margin earlier, so that records
        exactly at the bound are read too. A bookmark later than Scale's current time cannot
        be right (an older tap-scale could store one): it is ignored, with a warning, so the
        partition is read again rather than never.

        With ``now``, the bound as it would be at that time, asked before Scale's clock is
        known (`TasksStream.ask_first_pages`): nothing is logged, and the state is only read.
        """
        if now is None:
            state = self.get_context_state(context)
        else:
            state = next(
                (
                    partition
                    for partition in self.stream_state.get("partitions") or ()
                    if partition.get("context") == context
                ),
                {},
            )
        bounds = []
        if bookmark := state.get("replication_key_value"):
            try:
                moment = parse_timestamp(str(bookmark))
            except ValueError:
                msg = (
                    f"The state's bookmark {bookmark!r} for stream {self.name} and partition "
                    f"{dict(context)} is not an ISO 8601 timestamp. Fix or remove that partition "
                    "in the state (`meltano state get` / `meltano state set`)."
                )
                raise ScaleAPIError(msg) from None
            if now is not None and moment > now:
                pass  # ignored, as below, but not told: the sync itself will tell it
            elif now is None and moment > self.sync_started_at:
                self.logger.warning(
                    "The state's bookmark %s for stream %s and partition %s lies after Scale's "
                    "current time (%s), which no record can: it is ignored, and the partition "
                    "is read again from %s.",
                    bookmark,
                    self.name,
                    dict(context),
                    format_timestamp(self.sync_started_at),
                    "start_date" if self.start_date else "its beginning",
                )
            else:
                bounds.append(_earlier(moment, lookback))
        if (start_date := self.start_date) is not None:
            bounds.append(start_date)
        return _bound(max(bounds)) if bounds else None

    def start_bound(self) -> datetime | None:
        """Where a read of everything since ``start_date`` starts (None: from the beginning)."""
        start_date = self.start_date
        return None if start_date is None else _bound(start_date)

    def before_start(self, timestamp: str | None) -> bool:
        """Whether a timestamp the tap emits lies before ``start_date``."""
        start_date = self.start_date
        if start_date is None or not timestamp:
            return False
        try:
            return parse_timestamp(timestamp) < start_date
        except ValueError:
            return False  # unreadable: kept, rather than lost

    def page_params(self, next_page_token: str | None) -> dict[str, t.Any]:
        """The paging parameters of Scale's paginated endpoints."""
        return {"limit": self.config.get("page_size", 100), "next_token": next_page_token}

    @override
    @property
    def timeout(self) -> int:
        # Also the deadline of each whole request, body included (`transport`).
        return int(self.config.get("request_timeout", DEFAULT_REQUEST_TIMEOUT))

    @override
    @property
    def requests_session(self) -> requests.Session:
        # The sync's own thread's session. Reader threads each have their own
        # (`tap_scale.reading.http_pages`): requests does not promise a session is thread-safe.
        return transport.mount(super().requests_session, self.throttle)

    def request_headers(self) -> dict[str, str]:
        """Every header of a request to Scale, the key's among them."""
        return {**self.http_headers, **self.authenticator.auth_headers}

    @override
    def backoff_max_tries(self) -> int:
        return int(self.config.get("max_tries", DEFAULT_MAX_TRIES))

    @property
    def max_retry_wait(self) -> float:
        """The longest single wait between tries (the ``max_retry_wait`` setting)."""
        return float(self.config.get("max_retry_wait", DEFAULT_MAX_RETRY_WAIT))

    @override
    def backoff_wait_generator(self) -> Generator[float, BaseException | None, None]:
        """Wait as long as a ``Retry-After`` asks, else back off exponentially; never too long."""
        exponential = backoff.expo(base=2, factor=1, max_value=BACKOFF_CEILING)
        next(exponential)  # backoff's own generators open with a priming yield
        error = yield 0.0  # and backoff primes this one the same way before the first failure
        while True:
            asked = asked_wait(error)
            wait = random.uniform(0, next(exponential)) if asked is None else asked  # noqa: S311 - jitter, not cryptography
            error = yield min(wait, self.max_retry_wait)

    @override
    def backoff_jitter(self, value: float) -> float:
        # Jitter is already in the wait generator: a Retry-After is honoured as asked.
        return value

    @override
    def backoff_handler(self, details: Details) -> None:
        self.progress.retried()
        error = details.get("exception")
        response = getattr(error, "response", None)
        request = response if response is not None else getattr(error, "request", None)
        endpoint = describe_request(request) if request is not None else self.path
        wait = float(details.get("wait", 0.0))
        asked = asked_wait(error)
        capped = (
            f"; Scale asked {_asked(retry_after_header(response))} (Retry-After), capped by "
            "the `max_retry_wait` setting"
            if asked is not None and asked > wait
            else ""
        )
        if isinstance(error, (RetriableAPIError, transport.RequestDeadlineExceeded)):
            reason = str(error)
        else:
            reason = network_failure(error) if error is not None else "no answer"
        self.logger.warning(
            "Retrying %s in %.1f s (try %d of %d failed%s): %s",
            endpoint,
            wait,
            details["tries"],
            self.backoff_max_tries(),
            capped,
            reason,
        )

    @override
    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        # The SDK syncs a stream with no partitions as one partition of context None; an empty
        # scope (a key that sees no datasets, say) has nothing to read.
        if context is None and self.partitions == []:
            self.logger.info("Nothing in scope for %s: no %s to read", self.name, self.path)
            return
        self.cap_bookmark(context)
        yield from super().get_records(context)

    @override
    def build_prepared_request(self, *args: t.Any, **kwargs: t.Any) -> requests.PreparedRequest:
        self.progress.requested()
        return super().build_prepared_request(*args, **kwargs)

    @override
    def get_new_paginator(self) -> NextTokenPaginator:
        return NextTokenPaginator()

    @override
    def parse_response(self, response: requests.Response) -> t.Iterable[dict[str, t.Any]]:
        records = page_body(response).get(self.records_key)
        if not isinstance(records, list):
            msg = (
                f"Scale answered {describe_request(response)} without a `{self.records_key}` "
                "list. The API may have changed; report this to tap-scale's maintainers."
            )
            raise ScaleAPIError(msg)
        where = f"the `{self.records_key}` list of Scale's answer to {describe_request(response)}"
        yield from usable_records(records, self.id_key, where, self.logger.warning)

    @override
    def validate_response(self, response: requests.Response) -> None:
        self.check_answer(response)
        # Parsing here, inside the retried call, makes a 200 with a broken body a retry.
        self.read_body(response)

    def check_answer(self, response: requests.Response) -> None:
        """Note Scale's clock, and raise what the status means: a retry, or a fatal error.

        Keeps no state of the stream's: reader threads call it too.
        """
        self.server_clock.observe(response)
        status = response.status_code
        if status in RETRIABLE_STATUSES:
            msg = (
                f"Scale answered {describe_request(response)} with HTTP {status}: "
                f"{scale_error_text(response)}{self._asked_wait_note(response)}"
            )
            raise RetriableAPIError(msg, response)
        if status >= HTTPStatus.BAD_REQUEST:
            text = scale_error_text(response)
            advice = FATAL_ADVICE.get(status, "")
            if status == HTTPStatus.NOT_FOUND:
                # A wrong `api_url` answers everything with 404, not only unknown ids.
                advice = settings.not_found_advice(self.url_base, response) or advice
            msg = (
                f"Scale answered {describe_request(response)} with HTTP {status}: "
                f"{text.rstrip('.')}. {advice}"
            )
            raise ScaleAPIError(msg.rstrip(), status, text)

    def read_body(self, response: requests.Response) -> dict[str, t.Any]:
        """The answer's JSON object, parsed once (the stream's fast shape where it has one)."""
        return page_body(response, warn=self.logger.warning, fast=self.fast_page_body)

    def fast_page_body(self, content: bytes) -> dict[str, t.Any] | None:
        """A page's body in a faster shape than the usual parse, or None (the usual parse)."""
        del content
        return None

    def _asked_wait_note(self, response: requests.Response) -> str:
        header = retry_after_header(response)
        if header is None:
            return ""
        asked = retry_after_seconds(response)
        if asked is not None and asked > self.max_retry_wait:
            return (
                f" (Retry-After: {header}; tap-scale waits at most {self.max_retry_wait:g} s "
                "between tries, the `max_retry_wait` setting)"
            )
        return f" (Retry-After: {header})"

    def fetch(self, path: str, params: dict[str, t.Any]) -> dict[str, t.Any]:
        """GET one Scale object outside a sync (name lookups), with the same retries and checks."""
        request = self.build_prepared_request(
            method="GET",
            url=f"{self.url_base}{path}",
            params=params,
            headers=self.http_headers,
        )
        response = self.request_decorator(self._send_once)(request, None)
        return page_body(response)

    def _send_once(
        self, request: requests.PreparedRequest, context: Context | None
    ) -> requests.Response:
        del context  # the SDK's signature for what its retries wrap
        response = self.requests_session.send(self.authenticator(request), timeout=self.timeout)
        self.validate_response(response)
        return response


_EARLIEST = datetime.min.replace(tzinfo=timezone.utc)


def _bound(moment: datetime) -> datetime | None:
    """The strict ``*_after`` bound that includes ``moment``: one tie margin earlier."""
    bound = _earlier(moment, TIE_MARGIN)
    # Nothing was completed before the year 1: a bound there is no bound.
    return None if bound == _EARLIEST else bound


def _earlier(moment: datetime, by: timedelta) -> datetime:
    """``moment - by``, or the earliest moment Python has where that would be earlier still."""
    try:
        return moment - by
    except OverflowError:
        return _EARLIEST


def _asked(header: str | None) -> str:
    """What a Retry-After asks for, in words: a number of seconds or a date."""
    try:
        float(header or "")
    except ValueError:
        return f"to wait until {header}"
    return f"for {header} s"


def asked_wait(error: object) -> float | None:
    """The wait a retried error's response asks for (``Retry-After``), if any; may be huge."""
    if not isinstance(error, RetriableAPIError):
        return None
    return retry_after_seconds(error.response)
