"""Switchable faults: what rate limiters, load balancers and flaky networks do to a client.

Probabilities are per request and drawn from a Random seeded with `Faults.seed`, so a run with
the same requests in the same order meets the same faults.
"""

from __future__ import annotations

import json
import threading
import typing as t
from dataclasses import dataclass, field

from tap_scale.testing.api import Reply, error_reply, json_reply
from tap_scale.testing.seeds import seeded

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


class Strike(t.NamedTuple):
    """A fault striking a request: its name, and how many times it struck before."""

    name: str
    turn: int


@dataclass
class Faults:
    """Faults the simulator injects; all off by default. Change them at any time.

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
        seed: Seed of the Random the shares are drawn with.
        only_paths: When set, faults apply only to these paths (e.g. `("/v2/tasks",)`).
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
    _random: random.Random = field(init=False, repr=False, compare=False)
    _seeded_with: int | None = field(default=None, init=False, repr=False, compare=False)
    _struck: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def applies_to(self, path: str) -> bool:
        """Whether faults apply to requests for this path."""
        return not self.only_paths or path in self.only_paths

    def draw_before_handling(self) -> Strike | None:
        """The fault that stops a request before the API sees it, if one strikes."""
        return self._draw(("dropped_connection", "rate_limit", "server_error"))

    def draw_after_handling(self) -> Strike | None:
        """The fault that spoils a successful response, if one strikes."""
        return self._draw(("truncated_body", "invalid_json"))

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


def repeated_token(reply: Reply, token: str) -> Reply:
    """The same page, naming the token that fetched it as the token of the next page."""
    body = json.loads(reply.body)
    if "next_token" not in body:
        return reply
    body["next_token"] = token
    return json_reply(reply.status, body, reply.headers)


def _html_page(title: str) -> bytes:
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>gateway</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()
