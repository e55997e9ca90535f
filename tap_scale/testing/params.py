"""Query-string validation that answers like Scale: 400 with a message naming the parameter."""

from __future__ import annotations

import typing as t

from tap_scale.testing.timestamps import parse_timestamp

if t.TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

LIMIT_MIN = 1
LIMIT_MAX = 100
TIMESTAMP_EXAMPLE = "2025-01-02T04:00:39.923Z"


class ApiError(Exception):
    """A request Scale refuses; rendered as `{"status_code": ..., "error": ...}`."""

    def __init__(self, status: int, message: str) -> None:
        """Keep the HTTP status and the message for the error body."""
        super().__init__(message)
        self.status = status
        self.message = message

    def body(self) -> dict[str, object]:
        """The error body in Scale's shape."""
        return {"status_code": self.status, "error": self.message}


def bad_request(message: str) -> ApiError:
    """A 400 with this message."""
    return ApiError(400, message)


def not_found(message: str) -> ApiError:
    """A 404 with this message."""
    return ApiError(404, message)


class Query:
    """One request's query parameters, checked against the names its endpoint accepts.

    Every accessor raises `ApiError` (400) with a message that names the offending parameter.
    """

    def __init__(self, params: Mapping[str, Sequence[str]], accepted: Collection[str]) -> None:
        """Refuse parameters the endpoint does not know.

        A real API might ignore them; refusing them here catches a client that misspells a
        filter and would otherwise silently download everything.
        """
        unknown = sorted(set(params) - set(accepted))
        if unknown:
            known = ", ".join(sorted(accepted)) or "no parameters"
            message = f"Unknown query parameter: {unknown[0]}. This endpoint accepts {known}."
            raise bad_request(message)
        self._params = params

    def given(self, *names: str) -> list[str]:
        """Which of these parameters the request carries, in the order named."""
        return [name for name in names if name in self._params]

    def text(self, name: str) -> str | None:
        """The single value of a scalar parameter, or None if absent."""
        values = self._params.get(name)
        if not values:
            return None
        if len(values) > 1:
            message = f"Invalid {name}: it was given {len(values)} times; give it once."
            raise bad_request(message)
        if not values[0].strip():
            message = f"Invalid {name}: it must not be empty."
            raise bad_request(message)
        return values[0]

    def choice(self, name: str, allowed: Sequence[str]) -> str | None:
        """A scalar parameter that must be one of `allowed`, or None if absent."""
        value = self.text(name)
        if value is not None and value not in allowed:
            message = f"Invalid {name}: {value!r}. {name} must be one of: {', '.join(allowed)}."
            raise bad_request(message)
        return value

    def choices(self, name: str, allowed: Sequence[str]) -> frozenset[str]:
        """An array parameter (the key repeated, `opts=a&opts=b`) whose values must be allowed."""
        values = self._params.get(name, [])
        for value in values:
            if value not in allowed:
                hint = f" Repeat the key for each value: {name}=a&{name}=b." if "," in value else ""
                message = (
                    f"Invalid {name} value: {value!r}. {name} must be one of: "
                    f"{', '.join(allowed)}.{hint}"
                )
                raise bad_request(message)
        return frozenset(values)

    def limit(self) -> int:
        """The page size: an integer in 1..100, 100 when absent."""
        value = self.text("limit")
        if value is None:
            return LIMIT_MAX
        limit = int(value) if value.isascii() and value.isdigit() else None
        if limit is None or not LIMIT_MIN <= limit <= LIMIT_MAX:
            message = (
                f"Invalid limit: {value!r}. limit must be an integer between "
                f"{LIMIT_MIN} and {LIMIT_MAX}."
            )
            raise bad_request(message)
        return limit

    def timestamp(self, name: str) -> int | None:
        """An ISO 8601 date-time parameter as microseconds since the epoch, or None if absent."""
        value = self.text(name)
        if value is None:
            return None
        micros = parse_timestamp(value)
        if micros is None:
            # A raw '+' in a query string arrives as a space: the commonest way to break an offset.
            hint = " Send '+' in an offset as %2B." if " " in value.strip() else ""
            message = (
                f"Invalid {name}: {value!r} is not an ISO 8601 date-time "
                f"(e.g. {TIMESTAMP_EXAMPLE}).{hint}"
            )
            raise bad_request(message)
        return micros

    def required(self, name: str) -> str:
        """The value of a parameter the endpoint cannot do without."""
        value = self.text(name)
        if value is None:
            message = f"Missing parameter: {name} is required."
            raise bad_request(message)
        return value

    def one_of(self, *names: str) -> tuple[str, str]:
        """The one identifying parameter among `names` the request must give, as (name, value).

        Raises:
            ApiError: 400 when none or several of them are given.
        """
        given = self.at_most_one_of(*names)
        if given is None:
            message = f"Missing parameter: one of {_either(names)} is required."
            raise bad_request(message)
        return given

    def at_most_one_of(self, *names: str) -> tuple[str, str] | None:
        """The identifying parameter among `names` the request gives, if any, as (name, value).

        Raises:
            ApiError: 400 when several of them are given.
        """
        given = self.given(*names)
        if len(given) > 1:
            message = f"Give only one of {_either(names)}; the request has {' and '.join(given)}."
            raise bad_request(message)
        if not given:
            return None
        return given[0], self.required(given[0])


def _either(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
