"""The one HTTP client for Scale's v2 API: requests, auth, pagination, what each status means."""

from __future__ import annotations

import random
import sys
import typing as t
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from functools import cached_property
from http import HTTPStatus
from urllib.parse import urlparse

import backoff
import msgspec
from singer_sdk import RESTStream, metrics
from singer_sdk.authenticators import BearerTokenAuthenticator
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.pagination import BaseAPIPaginator

from tap_scale import settings
from tap_scale.models import UNKNOWN_FIELDS, Columns, parse_timestamp
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
    from tap_scale.selection import Selection
    from tap_scale.tap import TapScale

DEFAULT_API_URL = settings.DEFAULT_API_URL
DEFAULT_MAX_TRIES = 8
DEFAULT_REQUEST_TIMEOUT = 120
# Repairs of unexpected data are logged one by one up to this many per stream, then summarised,
# so a drifted field in every record does not drown the log.
LOGGED_REPAIRS = 20
# Exponential backoff between tries: 1, 2, 4, ... seconds, never more than a minute, each drawn
# at random below that ceiling ("full jitter"), so that many clients do not retry in step.
BACKOFF_CEILING = 60

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


_ERROR_TEXT_LIMIT = 200


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
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    # Not Scale's JSON error shape: a proxy's HTML page, say. Enough of it to recognise.
    text = " ".join(response.text.split()) or "(empty body)"
    return text if len(text) <= _ERROR_TEXT_LIMIT else text[:_ERROR_TEXT_LIMIT] + "..."


def describe_request(response: requests.Response) -> str:
    """Method, path and query of the request behind a response (never the key: it is a header)."""
    request = response.request
    url = urlparse(str(request.url))
    query = f"?{url.query}" if url.query else ""
    return f"{request.method} {url.path}{query}"


def retry_after_seconds(response: requests.Response | None) -> float | None:
    """The wait a 429 asks for in its ``Retry-After`` header (seconds or an HTTP date), if any."""
    value = response.headers.get("Retry-After") if response is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # unreadable: fall back to exponential backoff
    return max(0.0, (moment - datetime.now(timezone.utc)).total_seconds())


def page_body(response: requests.Response) -> dict[str, t.Any]:
    """The JSON object a Scale response carries, parsed once per response.

    Both the records and the next page's token come from the body; caching it on the response
    spares parsing every page twice.
    """
    cached = response.__dict__.get("_scale_body")
    if cached is None:
        try:
            cached = msgspec.json.decode(response.content)
        except ValueError as error:  # msgspec's DecodeError is one
            msg = (
                f"Scale answered {describe_request(response)} with HTTP {response.status_code} "
                f"but a body that is not JSON ({error}): {scale_error_text(response)}"
            )
            raise RetriableAPIError(msg, response) from error
        if not isinstance(cached, dict):
            msg = (
                f"Scale answered {describe_request(response)} with a JSON "
                f"{type(cached).__name__} where an object was expected."
            )
            raise ScaleAPIError(msg)
        response.__dict__["_scale_body"] = cached
    return t.cast("dict[str, t.Any]", cached)


class NextTokenPaginator(BaseAPIPaginator[str | None]):
    """Follows Scale's opaque ``next_token`` until a page comes back without one."""

    def __init__(self) -> None:
        """Start before the first page, which takes no token."""
        super().__init__(None)
        # Every token seen, not just the last: a cycle of two or more pages would otherwise
        # loop forever. Tokens are short, so this stays small even for huge projects.
        self._seen_tokens: set[str] = set()

    @override
    def get_next(self, response: requests.Response) -> str | None:
        token = page_body(response).get("next_token") or None
        if token is None:
            return None
        if token in self._seen_tokens:
            msg = (
                f"Scale returned a next_token it had already returned, after page "
                f"{self.count} of {describe_request(response)}; following it would loop "
                "forever. Run the sync again; if it recurs, report it to Scale support."
            )
            raise ScaleAPIError(msg)
        self._seen_tokens.add(token)
        return str(token)

    @override
    def continue_if_empty(self, response: requests.Response) -> bool:
        # Scale may send an empty page that still carries a token: more pages follow.
        return bool(page_body(response).get("next_token"))


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

    _repairs_logged = 0

    @override
    def __init__(self, tap: Tap, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(tap, *args, **kwargs)
        quiet(self.logger)

    @property
    def progress(self) -> SyncProgress:
        """The sync's progress, shared by every stream."""
        return t.cast("TapScale", self._tap).progress

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
        self.progress.ended(self.name, streams=len(self._tap.streams))

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
        return t.cast("TapScale", self._tap).selection

    @cached_property
    def sync_started_at(self) -> datetime:
        """Upper bound of incremental requests: what happens during a sync is the next run's."""
        return datetime.now(timezone.utc)

    def lower_bound(self, context: Context, lookback: timedelta = timedelta(0)) -> datetime | None:
        """Where a partition's incremental read starts, for Scale's strict ``*_after`` filters.

        The partition's bookmark less ``lookback``, or ``start_date`` if that is later, or None
        on a first run without a ``start_date``; then one tie margin earlier, so that records
        exactly at the bound are read too.
        """
        bounds = []
        if bookmark := self.get_context_state(context).get("replication_key_value"):
            try:
                bounds.append(parse_timestamp(str(bookmark)) - lookback)
            except ValueError:
                msg = (
                    f"The state's bookmark {bookmark!r} for stream {self.name} and partition "
                    f"{dict(context)} is not an ISO 8601 timestamp. Fix or remove that partition "
                    "in the state (`meltano state get` / `meltano state set`)."
                )
                raise ScaleAPIError(msg) from None
        if start_date := self.config.get("start_date"):
            bounds.append(parse_timestamp(start_date))
        return max(bounds) - TIE_MARGIN if bounds else None

    def page_params(self, next_page_token: str | None) -> dict[str, t.Any]:
        """The paging parameters of Scale's paginated endpoints."""
        return {"limit": self.config.get("page_size", 100), "next_token": next_page_token}

    @override
    @property
    def timeout(self) -> int:
        return int(self.config.get("request_timeout", DEFAULT_REQUEST_TIMEOUT))

    @override
    def backoff_max_tries(self) -> int:
        return int(self.config.get("max_tries", DEFAULT_MAX_TRIES))

    @override
    def backoff_wait_generator(self) -> Generator[float, BaseException | None, None]:
        """Wait as long as a 429's ``Retry-After`` asks; otherwise back off exponentially."""
        exponential = backoff.expo(base=2, factor=1, max_value=BACKOFF_CEILING)
        next(exponential)  # backoff's own generators open with a priming yield
        error = yield 0.0  # and backoff primes this one the same way before the first failure
        while True:
            response = getattr(error, "response", None)
            asked = retry_after_seconds(response) if isinstance(error, RetriableAPIError) else None
            error = yield asked if asked is not None else random.uniform(0, next(exponential))  # noqa: S311 - jitter, not cryptography

    @override
    def backoff_jitter(self, value: float) -> float:
        # Jitter is already in the wait generator: a Retry-After is honoured as asked.
        return value

    @override
    def backoff_handler(self, details: Details) -> None:
        self.progress.retried()
        error = details.get("exception")
        response = getattr(error, "response", None)
        endpoint = describe_request(response) if response is not None else self.path
        self.logger.warning(
            "Retrying %s in %.1f s (try %d of %d failed): %s",
            endpoint,
            details.get("wait", 0.0),
            details["tries"],
            self.backoff_max_tries(),
            error if isinstance(error, RetriableAPIError) else type(error).__name__,
        )

    @override
    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        # The SDK syncs a stream with no partitions as one partition of context None; an empty
        # scope (a key that sees no datasets, say) has nothing to read.
        if context is None and self.partitions == []:
            self.logger.info("Nothing in scope for %s: no %s to read", self.name, self.path)
            return
        yield from super().get_records(context)

    @override
    def build_prepared_request(self, *args: t.Any, **kwargs: t.Any) -> requests.PreparedRequest:
        self.progress.requested()
        return super().build_prepared_request(*args, **kwargs)

    @override
    def request_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        try:
            yield from super().request_records(context)
        except RecursionError:
            # Python's parsers recurse once per level of nesting, and stop at about a thousand:
            # the same answer fails the same way on every try, so it is not retried.
            partition = f", partition {dict(context)}" if context else ""
            msg = (
                f"Scale answered a request (stream {self.name}{partition}) with JSON nested "
                "deeper than Python can read (about a thousand levels; a task's `metadata` "
                "perhaps). Nothing after it in that partition can be read. Ask Scale support to "
                "look at those tasks; meanwhile leave that project or batch out of the settings "
                "(`project_ids`, `batch_ids`, ...) so that the rest syncs."
            )
            raise ScaleAPIError(msg) from None

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
        yield from records

    @override
    def validate_response(self, response: requests.Response) -> None:
        status = response.status_code
        if status in RETRIABLE_STATUSES:
            msg = (
                f"Scale answered {describe_request(response)} with HTTP {status}: "
                f"{scale_error_text(response)}"
            )
            raise RetriableAPIError(msg, response)
        if status >= HTTPStatus.BAD_REQUEST:
            text = scale_error_text(response)
            advice = FATAL_ADVICE.get(status, "")
            if status == HTTPStatus.NOT_FOUND:
                # A wrong `api_url` answers everything with 404, not only unknown ids.
                advice = settings.not_found_advice(self.url_base, response) or advice
            msg = (
                f"Scale answered {describe_request(response)} with HTTP {status}: {text}. {advice}"
            )
            raise ScaleAPIError(msg.rstrip(), status, text)
        # Parsing here, inside the retried call, makes a 200 with a broken body a retry.
        page_body(response)

    def fetch(self, path: str, params: dict[str, t.Any]) -> dict[str, t.Any]:
        """GET one Scale object outside a sync (name lookups), with the same retries and checks."""
        request = self.build_prepared_request(
            method="GET",
            url=f"{self.url_base}{path}",
            params=params,
            headers=self.http_headers,
        )
        # The SDK's own request path: the backoff decorator around its authenticated send.
        response = self.request_decorator(self._request)(request, None)
        return page_body(response)
