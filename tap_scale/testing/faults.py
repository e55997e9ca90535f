"""Switchable faults: what rate limiters, gateways, networks and an evolving API do to clients.

Shares of requests are drawn from a Random seeded with `Faults.seed`, so a run with the same
requests in the same order meets the same faults. Shares of objects (`type_drift`,
`missing_fields`) are not drawn: whether an object is hit depends only on the seed, the share
and its id (`Faults.strikes_item`), so it is hit in every response that holds it.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import typing as t
from dataclasses import dataclass, field
from http import HTTPStatus

from tap_scale.testing.api import UNAUTHORIZED, Reply, error_reply, json_reply
from tap_scale.testing.seeds import seeded
from tap_scale.testing.timestamps import from_micros, parse_timestamp

if t.TYPE_CHECKING:
    import random

# Load balancers answer with these while the service behind them is down or restarting.
SERVER_ERROR_STATUSES = (500, 502, 503, 504)
_REASONS = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_HTML = "text/html; charset=utf-8"
# What Scale-like services say when they refuse a request with these statuses.
_REFUSALS = {
    400: "Invalid request: the request is malformed or its parameters are not valid",
    401: UNAUTHORIZED,
    402: "Payment required: your account has an outstanding balance; settle it to resume access",
    403: "Forbidden: this API key cannot access this resource",
    404: "Not found: the requested resource does not exist",
    405: "Method not allowed: this endpoint does not answer this method",
    408: "Request timeout: the request took too long to arrive",
    409: "Conflict: the resource is being changed by another request; try again",
    413: "Payload too large: the request is larger than this endpoint accepts",
    422: "Unprocessable entity: the request is well formed but cannot be processed",
    429: "Too many requests",
    **_REASONS,
}
# Statuses a refusal can be sent with: 1xx are not final responses, and 204, 205 and 304 carry
# no body, so a client would leave the error body unread and lose its place on the connection.
_SENDABLE = frozenset(range(200, 600)) - {204, 205, 304}
_ITEM_SHARES = (
    "type_drift",
    "missing_fields",
    "new_fields",
    "lone_surrogate",
    "latin1_text",
    "pasted_key",
    "junk_items",
)
_OFFSET = re.compile(r"[+-](?:[01]\d|2[0-3]):[0-5]\d")
# The time filters a server may ignore (`ignore_time_filters`).
TIME_FILTERS = frozenset(
    {
        "completed_after",
        "completed_before",
        "created_after",
        "created_before",
        "delivered_after",
        "delivered_before",
    }
)
BEFORE_FILTERS = frozenset(name for name in TIME_FILTERS if name.endswith("_before"))


class Strike(t.NamedTuple):
    """A fault striking a request: its name, and how many times it struck before."""

    name: str
    turn: int


@dataclass
class Faults:
    r"""Faults the simulator injects; all off by default. Change them at any time.

    Attributes:
        rate_limit: Share of requests answered 429, with Scale's body
            `{"status_code":429,"error":"Too many requests"}`.
        retry_after: The Retry-After header on those 429s (seconds or an HTTP date); None sends
            no header.
        server_error: Share answered 500, 502, 503 or 504 in turn, every other one with an HTML
            page (as a load balancer sends) instead of Scale's JSON error body.
        dropped_connection: Share of requests whose connection is closed with no response.
        truncated_body: Share of successful responses cut off after half their body, although
            their Content-Length announces all of it; the connection is then closed.
        invalid_json: Share of successful responses whose body is not valid JSON: in turn, JSON
            cut short (with a Content-Length that matches) and a 200 HTML page.
        slow_seconds: Latency added to every request the faults apply to.
        repeated_token: When True, a page fetched with a `next_token` names that same token as
            its own `next_token`, as a broken API might: a client that follows it loops forever.
        seed: Seed of the Random the shares are drawn with, and of which objects `type_drift`
            and `missing_fields` hit.
        only_paths: When set, faults apply only to these paths (e.g. `("/v2/tasks",)`).
        empty_page: Share of requests to paginated endpoints (`/v2/tasks`, `/v2/batches`,
            `/v2/delivery`, `/v2/delivery/tasks`, `/v2/datasets/delivery`, `/v2/datasets/tasks`)
            answered 200 with no items: the list key (`tasks`, `batches` or `docs`) is empty,
            every other key (`delivery`)
            is there, and `next_token` is a fresh token resuming exactly where the request did
            (from the start for a first page), so a client that follows it loses nothing.
            Requests the API refuses (400, 404) are refused as usual.
        type_drift: Share of objects whose values arrive with an unexpected JSON type, as from
            an API whose models evolved: in tasks (`/v2/tasks`, `/v2/task`, `/v2/delivery`),
            `metadata` is a JSON-encoded string, `model_parameters.temperature` and
            `max_completion_tokens` are strings ("0.9", "2048"), annotations' `labels` are one
            comma-joined string, and an unknown field `"priority": 3` appears; in deliveries
            (`/v2/deliveries`, and `/v2/delivery` with `expand=delivery`), `task_count` is a
            string ("15"). `ScaleSimulator.drifted(id)` tells which objects are hit.
        missing_fields: Share of tasks (on the same paths as `type_drift`) rendered without
            their optional fields: no `batch`, `metadata` or `errors`, no `source_id` on
            messages, no `annotations` on turns or threads. `ScaleSimulator.stripped(id)` tells
            which tasks are hit.
        new_fields: Share of objects, on every endpoint (tasks, delivered tasks, deliveries,
            projects, batches, datasets, dataset deliveries and tasks, schemas), served with a
            top-level field that no model of Scale's lists: `"review_round": 2`. It stands for
            a field Scale adds after this release, which a client must keep, not drop.
            `ScaleSimulator.grown(id)` tells which objects are hit.
        refuse_with: When set, every request is answered with this status (200 to 599, except
            the bodiless 204, 205 and 304) and Scale's error body with a message fitting it
            (e.g. 402: "Payment required: ..."), before authentication; a 429 carries
            `retry_after`. No share is drawn while it is set.
        ignore_time_filters: When True, the API ignores the time filters of every request
            (`completed_after`, `completed_before`, `created_*`, `delivered_*`), as a server
            or proxy that drops them would: a client gets records outside the bounds it asked
            for, tasks completed in the future (`add_tasks(completed_at=...)`) included.
        timestamp_offset: When set (e.g. "+05:30" or "-01:00"), tasks' and deliveries'
            timestamps are written at this UTC offset: the same instants, written as
            `2025-01-02T09:30:39.923+05:30`, as a service that localises times would.
        clock_skew: Seconds the server's clock is ahead of the machine's (negative: behind). It
            stamps its Date headers, and tasks added or completed without an explicit
            `completed_at` (`ScaleSimulator.now()` tells the server's time).
        lone_surrogate: Share of tasks (per id, on the paths `type_drift` acts on) whose
            metadata holds the escape of a lone UTF-16 surrogate (U+D83D, half of an emoji cut
            by a careless client upstream, under `note`): valid JSON to Python's reader, refused by
            strict ones such as msgspec, the same way on every try. `ScaleSimulator.surrogated`
            tells which tasks are hit.
        latin1_text: Share of tasks (per id, on the paths `type_drift` acts on) whose first
            message's text ends in a word written in Latin-1, not UTF-8 (`café`, its é the one
            byte 0xE9), as a system upstream that mixed up encodings leaves it, deep inside the
            task's turns: no JSON reader takes the body strictly, the same way on every try.
            `ScaleSimulator.latin1_hit` tells which tasks are hit.
        pasted_key: Share of tasks (per id, on the paths `type_drift` acts on) whose first
            message's text ends in the API key the request was made with, every character of
            it written as a JSON escape (`m` as `\u006d`): a rater who pasted the key, and a
            serializer that escapes more than it must. The same text to any JSON reader.
        junk_items: Share of objects (per id, in every list of tasks, deliveries, projects,
            batches or datasets, on every path) followed in their list by an item that is not
            one: `null`, a string, a number or an object without its id. The real objects are
            all still there.
        trickle: Share of responses sent one byte at a time, `trickle_pause` seconds apart
            (status line, headers and body), as a throttled proxy might: each byte arrives
            well within any read timeout, yet the whole takes minutes.
        trickle_pause: Seconds between two bytes of a trickled response.
        echo_credentials: When True, every error response quotes the request's Authorization
            header in its text (a JSON error's `error`, an HTML page's body), as a debugging
            proxy or a careless error page might.
        requests_per_second: When above 0, a rate limiter in front of the API: a token bucket
            refilled at this many requests per second across all connections, holding at most
            `burst` tokens (default: one second's worth). A request finding it empty is answered
            at once with Scale's 429 and a `Retry-After` of the whole seconds until a token is
            due (at least 1), before any latency: limiters answer fast.
        burst: The bucket's size for `requests_per_second`; None: one second's worth.
        inclusive_before: When True, the API's `*_before` filters include their bound
            (`completed_at <= completed_before`) rather than exclude it. Scale does not document
            which it does; a client must lose nothing either way.
        byte_order_mark: When True, every successful body starts with a UTF-8 byte order mark
            (EF BB BF) before its JSON, as some servers and proxies write it: the same bytes on
            every try, refused by strict JSON readers.

    Faults apply in this order, and the request log's `fault` names, joined by "+", those that
    struck: `refuse_with` or one of the refusals (`dropped_connection`, `rate_limit`,
    `server_error`), which end the request; then `ignore_time_filters`, which changes the
    query; then, on a 200, `empty_page`, `repeated_token`, `missing_fields`, `type_drift`,
    `timestamp_offset`, `lone_surrogate`, `latin1_text`, `pasted_key`, `junk_items` and
    `byte_order_mark`, which reshape the body; then `truncated_body`, `invalid_json` or
    `trickle`, which spoil its delivery. Last, `echo_credentials` rewrites any error response.
    """

    rate_limit: float = 0.0
    retry_after: str | None = "1"
    server_error: float = 0.0
    dropped_connection: float = 0.0
    truncated_body: float = 0.0
    invalid_json: float = 0.0
    slow_seconds: float = 0.0
    repeated_token: bool = False
    seed: int = 0
    only_paths: tuple[str, ...] = ()
    # After the older fields, so that positional arguments keep their meaning.
    empty_page: float = 0.0
    type_drift: float = 0.0
    missing_fields: float = 0.0
    refuse_with: int | None = None
    new_fields: float = 0.0
    ignore_time_filters: bool = False
    timestamp_offset: str | None = None
    clock_skew: float = 0.0
    lone_surrogate: float = 0.0
    latin1_text: float = 0.0
    pasted_key: float = 0.0
    junk_items: float = 0.0
    trickle: float = 0.0
    trickle_pause: float = 0.05
    echo_credentials: bool = False
    requests_per_second: float = 0.0
    burst: float | None = None
    inclusive_before: bool = False
    byte_order_mark: bool = False
    _random: random.Random = field(init=False, repr=False, compare=False)
    _seeded_with: int | None = field(default=None, init=False, repr=False, compare=False)
    _struck: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )
    _bucket: TokenBucket | None = field(default=None, init=False, repr=False, compare=False)

    def __setattr__(self, name: str, value: object) -> None:
        """Set a field, refusing a `refuse_with` status no response could be sent with."""
        # Checked here rather than when serving, where an error would only drop connections.
        # (A bool is an int to Python, and 200.0 equals 200, but neither is a status.)
        if name == "refuse_with" and value is not None and type(value) is not int:
            message = f"refuse_with must be an int status, not {value!r}"
            raise TypeError(message)
        if name == "refuse_with" and value is not None and value not in _SENDABLE:
            message = f"refuse_with must be a status from 200 to 599 with a body, not {value!r}"
            raise ValueError(message)
        if name == "timestamp_offset" and value is not None and not _OFFSET.fullmatch(str(value)):
            message = f"timestamp_offset must be written like +05:30 or -01:00, not {value!r}"
            raise ValueError(message)
        super().__setattr__(name, value)

    def applies_to(self, path: str) -> bool:
        """Whether faults apply to requests for this path."""
        return not self.only_paths or path in self.only_paths

    def draw_before_handling(self) -> Strike | None:
        """The fault that stops a request before the API sees it, if one strikes."""
        return self._draw(("dropped_connection", "rate_limit", "server_error"))

    def rate_limited_for(self) -> float | None:
        """Seconds until the rate limiter lets this request through, or None: it passes now."""
        rate = float(self.requests_per_second)
        if rate <= 0:
            return None
        with self._lock:
            size = max(1.0, rate if self.burst is None else float(self.burst))
            if self._bucket is None or self._bucket.settings != (rate, size):
                self._bucket = TokenBucket(rate, size)
            return self._bucket.take()

    def draw_empty_page(self) -> bool:
        """Whether a request to a paginated endpoint gets an empty page."""
        return self._draw(("empty_page",)) is not None

    def strikes_item(self, name: str, item_id: str) -> bool:
        """Whether the per-object fault `name` (`type_drift`, `missing_fields`) hits this id.

        A pure function of the seed, the share and the id, so that an object is hit in every
        response holding it, and raising the share only adds objects to those hit.
        """
        if name not in _ITEM_SHARES:
            message = f"{name!r} is not a per-object fault; those are {_ITEM_SHARES}"
            raise ValueError(message)
        share = float(getattr(self, name))
        if share <= 0:
            return False
        digest = hashlib.sha256(f"{self.seed}:{name}:{item_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") < share * 2**64

    def draw_after_handling(self) -> Strike | None:
        """The fault that spoils a successful response, if one strikes."""
        return self._draw(("truncated_body", "invalid_json", "trickle"))

    def _draw(self, names: tuple[str, ...]) -> Strike | None:
        with self._lock:
            if self._seeded_with != self.seed:
                # Reseed when the seed changes, so that setting it restarts the sequence.
                self._random = seeded(self.seed)
                self._seeded_with = self.seed
            for name in names:
                probability = float(getattr(self, name))
                # No draw for a fault that is off, so switching one on leaves the others'
                # sequence as it was.
                if probability > 0 and self._random.random() < probability:
                    turn = self._struck.get(name, 0)
                    self._struck[name] = turn + 1
                    return Strike(name, turn)
        return None


class TokenBucket:
    """A rate limiter's bucket: `rate` tokens a second, at most `size` held, one per request."""

    def __init__(self, rate: float, size: float) -> None:
        """A full bucket."""
        self.settings = (rate, size)
        self._rate, self._size = rate, size
        self._tokens = size
        self._at = time.monotonic()

    def take(self) -> float | None:
        """Take a token (None), or the seconds until one is due if the bucket is empty."""
        now = time.monotonic()
        self._tokens = min(self._size, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return None
        return (1 - self._tokens) / self._rate


def refusal(status: int, retry_after: str | None) -> Reply:
    """Scale's error body with this status and a message that fits it."""
    if status == HTTPStatus.TOO_MANY_REQUESTS:
        return rate_limited(retry_after)
    message = _REFUSALS.get(status)
    if message is None:
        try:
            message = HTTPStatus(status).phrase
        except ValueError:  # a status no standard names
            message = f"Request refused with status {status}"
    return error_reply(status, message)


def rate_limited(retry_after: str | None) -> Reply:
    """Scale's 429, with a Retry-After header when one is configured."""
    headers = () if retry_after is None else (("Retry-After", retry_after),)
    return error_reply(429, "Too many requests", headers)


def server_error(turn: int) -> Reply:
    """A 5xx: the status cycles through `SERVER_ERROR_STATUSES`; every other body is HTML."""
    status = SERVER_ERROR_STATUSES[(turn // 2) % len(SERVER_ERROR_STATUSES)]
    if turn % 2 == 0:
        return error_reply(status, _REASONS[status])
    return Reply(status, _html_page(f"{status} {_REASONS[status]}"), _HTML)


def invalid_json(reply: Reply, turn: int) -> Reply:
    """A 200 whose body does not parse: the JSON cut short, or an HTML page instead."""
    if turn % 2 == 0:
        return Reply(200, reply.body[: max(1, len(reply.body) // 2)], reply.content_type)
    return Reply(200, _html_page("Service temporarily unavailable, please try again"), _HTML)


def echoing(reply: Reply, authorization: str | None) -> Reply:
    """An error response whose text quotes the request's Authorization header."""
    quoted = f"(request headers: Authorization: {authorization})"
    if reply.content_type.startswith("application/json"):
        body = json.loads(reply.body)
        body["error"] = f"{body.get('error', '')} {quoted}"
        return json_reply(reply.status, body, reply.headers)
    page = reply.body.replace(b"</body>", f"<pre>{quoted}</pre></body>".encode())
    return Reply(reply.status, page, reply.content_type, reply.headers)


def repeated_token(reply: Reply, token: str) -> Reply | None:
    """The same page, naming the token that fetched it as the token of the next page.

    None for a last page, which names no next page, so has no token to repeat.
    """
    body = json.loads(reply.body)
    if "next_token" not in body:
        return None
    body["next_token"] = token
    return json_reply(reply.status, body, reply.headers)


def _html_page(title: str) -> bytes:
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>gateway</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()


def including_before(params: t.Mapping[str, t.Sequence[str]]) -> dict[str, list[str]]:
    """The query with each readable `*_before` bound one microsecond later (`inclusive_before`).

    Timestamps are at most microsecond-precise, so `moment < bound + 1 µs` is `moment <= bound`.
    An unreadable bound is left for the API to refuse as usual.
    """
    widened = {name: list(values) for name, values in params.items()}
    for name in BEFORE_FILTERS & widened.keys():
        micros = parse_timestamp(widened[name][0]) if widened[name] else None
        if micros is not None:
            later = from_micros(micros + 1)
            widened[name] = [f"{later.year:04d}-{later:%m-%dT%H:%M:%S.%f}Z"]
    return widened
