"""The settings, checked whole before the first request, every problem reported at once.

Beyond their JSON Schema (types, ranges, allowed values), each problem names the setting and
what it takes: names that are no setting (refused where they are one misspelt, with the
setting meant), an API key that cannot travel in a header, an `api_url` that is no https URL,
a `start_date` that is no date. Values of secret settings are never quoted.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import socket
import typing as t
from datetime import datetime, timezone
from urllib.parse import urlparse

import requests
from singer_sdk.typing import DEFAULT_JSONSCHEMA_VALIDATOR, extend_validator_with_defaults

from tap_scale.inputs import JSON_TYPES, Findings, json_type, shown, type_names
from tap_scale.models import format_timestamp, parse_timestamp
from tap_scale.state import moment_problem

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, MutableMapping

    from jsonschema import ValidationError

DEFAULT_API_URL = "https://api.scale.com/v2"
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
# What to do about settings that cannot be used, with or without Meltano.
CHANGE_SETTINGS = (
    "Fix them in the config file, or with `meltano config set tap-scale <setting> <value>`, "
    "and run again."
)
_DATE = re.compile(r"\d{4}-\d\d-\d\d")

# Settings the SDK reads although the tap's JSON Schema does not list them.
SDK_SETTINGS = frozenset({"emit_activate_version_messages", "user_agent"})
# Scale's own words for what a tap-scale setting sets (API parameters, common synonyms): a
# setting named so is a mistyped one, even where the spelling is far from the setting's.
SCALE_WORDS: dict[str, tuple[str, ...]] = {
    "limit": ("page_size",),
    "key": ("api_key",),
    "token": ("api_key",),
    "api_token": ("api_key",),
    "url": ("api_url",),
    "base_url": ("api_url",),
    "status": ("task_statuses",),
    "completed_after": ("start_date",),
    "since": ("start_date",),
    "timeout": ("request_timeout",),
    "retries": ("max_tries",),
    "max_retries": ("max_tries",),
    "concurrency": ("max_concurrency",),
}
# How close a name must be to a setting's to count as a misspelling of it (difflib's ratio).
CLOSE_ENOUGH = 0.75
# What the schemas leave open, checked with them: ranges for the SDK's own numeric settings
# (its schema has none), and task_statuses with at least one status (an empty list would read
# the default, completed, which nobody writing [] means).
RULES: dict[str, dict[str, t.Any]] = {
    "flattening_max_depth": {"minimum": 0, "maximum": 100},
    "flattening_max_key_length": {"minimum": 1, "maximum": 10_000},
    "task_statuses": {"minItems": 1},
}


def check_settings(
    config: MutableMapping[str, t.Any],
    schema: Mapping[str, t.Any],
    environ: Mapping[str, str] | None = None,
) -> Findings:
    """Check settings against the tap's JSON Schema and beyond, filling in defaults.

    Like the SDK's own check, it writes the schema's defaults into ``config``; it also writes
    ``start_date`` in the tap's one timestamp form (a plain date is midnight UTC).
    """
    environ = os.environ if environ is None else environ
    properties: dict[str, Mapping[str, t.Any]] = {
        name: {**setting, **RULES.get(name, {})}
        for name, setting in schema.get("properties", {}).items()
    }
    schema = {**schema, "properties": properties}
    validator = extend_validator_with_defaults(DEFAULT_JSONSCHEMA_VALIDATOR)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.path])
    # A value of the wrong type is reported as that alone, not also as out of its range.
    mistyped = {tuple(error.path) for error in errors if error.validator == "type"}
    errors = [e for e in errors if e.validator == "type" or tuple(e.path) not in mistyped]
    problems = [_schema_problem(error, properties) for error in errors]
    if "api_key" not in config and f"{_ENV_PREFIX}API_KEY" in environ:
        problems.append(
            f"{_ENV_PREFIX}API_KEY is set in the environment, but the tap reads settings from "
            "the environment only when started with `--config ENV` (as well as, or instead "
            "of, a config file)"
        )
    # Settings of the wrong type were reported above; only well-typed values are read further.
    invalid = {str(error.path[0]) for error in errors if error.path}
    problems += _api_key_problems(config) if "api_key" not in invalid else []
    problems += _api_url_problems(config) if "api_url" not in invalid else []
    warnings: list[str] = []
    if "start_date" not in invalid and config.get("start_date") is not None:
        problems += _start_date_problems(config, warnings)
    if config.get("flattening_enabled") is True and config.get("flattening_max_depth") is None:
        problems.append(
            "`flattening_enabled` is true, but `flattening_max_depth` is not set: set how many "
            "levels of objects to flatten (1 for one)"
        )
    unknown_problems, unknown_warnings = _unknown_settings(config, properties)
    return Findings(problems + unknown_problems, warnings + unknown_warnings)


_ENV_PREFIX = "TAP_SCALE_"


def _schema_problem(  # noqa: PLR0911 - one sentence per JSON Schema keyword
    error: ValidationError, properties: Mapping[str, Mapping[str, t.Any]]
) -> str:
    if not error.path:
        if error.validator == "required":
            return f"`{str(error.message).split(chr(39))[1]}` is missing; it is required"
        return f"the settings are {shown(error.instance)}, where an object is expected"
    setting = properties.get(str(error.path[0]), {})
    where = _place(list(error.path))
    # A secret's value is never quoted, not even in part.
    secret = bool(setting.get("secret"))
    kind = JSON_TYPES.get(json_type(error.instance), "a value")
    written = kind if secret else shown(error.instance)
    keyword, limit = str(error.validator), error.validator_value
    if keyword == "type":
        return f"{where} is {written}, {_wanted_type(error, secret=secret)}"
    if side := _BOUNDS.get(keyword):
        return f"{where} is {written}, {side} of {limit}{_range(setting)}"
    if keyword == "enum":
        allowed = ", ".join(map(str, t.cast("list[t.Any]", limit)))
        return f"{where}: {written} is not one of the values it takes ({allowed})"
    if keyword in {"minLength", "minItems"} and limit == 1:
        return f"{where} is empty"
    if keyword in {"anyOf", "oneOf"}:
        return f"{where} is {written}, which is none of the forms it takes"
    if keyword == "required":
        return f"{where} has no `{str(error.message).split(chr(39))[1]}`"
    if keyword == "additionalProperties":
        return f"{where}: {error.message}"
    return f"{where} is {'not valid' if secret else written}: {error.message}"


def _place(path: list[str | int]) -> str:
    """A place in the settings as a person reads it: `batch_config.encoding` item 2."""
    names = [str(path[0])]
    while len(path) > len(names) and not isinstance(path[len(names)], int):
        names.append(str(path[len(names)]))
    items = path[len(names) :]
    return f"`{'.'.join(names)}`" + "".join(
        f" item {part + 1}" if isinstance(part, int) else f".{part}" for part in items
    )


_BOUNDS = {
    "minimum": "less than the minimum",
    "exclusiveMinimum": "not more than the minimum",
    "maximum": "greater than the maximum",
    "exclusiveMaximum": "not less than the maximum",
}


def _wanted_type(error: ValidationError, *, secret: bool) -> str:
    expected = [name for name in type_names(error.validator_value) if name != "null"]
    wanted = " or ".join(JSON_TYPES.get(name, name) for name in expected)
    # The commonest slip: one name where a list of names is asked for.
    hint = ""
    if "array" in expected and isinstance(error.instance, str) and not secret:
        hint = f" (write [{json.dumps(error.instance)}])"
    return f"which is not of type '{expected[0]}': it takes {wanted}{hint}"


def _range(setting: Mapping[str, t.Any]) -> str:
    low, high = setting.get("minimum"), setting.get("maximum")
    if low is None or high is None:
        return ""
    return f" (it takes {low} to {high})"


def _api_key_problems(config: Mapping[str, t.Any]) -> list[str]:
    api_key = config.get("api_key")
    # A key pasted with a newline or a space would be refused by the HTTP library with the key
    # in its message; say so without echoing it.
    if isinstance(api_key, str) and (
        api_key != api_key.strip() or not api_key.isprintable() or not api_key.isascii()
    ):
        return [
            (
                "`api_key` has leading or trailing whitespace, or characters that cannot be "
                "sent in an HTTP header; paste the key again exactly as Scale's dashboard shows it"
            )
        ]
    return []


def shown_url(url: str) -> str:
    """A URL as it may be shown: without any user name or password it carries.

    Cut by pattern rather than parsed, so that a URL no parser accepts is shown safely too.
    """
    return _CREDENTIALS.sub(r"\1", url)


# What comes between a URL's `//` and its host: `user:password@`.
_CREDENTIALS = re.compile(r"^([^/?#]*//)[^/?#]*@")


def _api_url_problems(config: Mapping[str, t.Any]) -> list[str]:
    api_url = str(config.get("api_url", DEFAULT_API_URL))
    url_shown = shown_url(api_url)
    try:
        url = urlparse(api_url)
        port = url.port  # reading it checks it: a port out of 0..65535 raises here
    except ValueError as error:
        return [
            f"`api_url` {url_shown!r} is not a URL ({error}); Scale's API is at {DEFAULT_API_URL}"
        ]
    if not api_url.strip():
        return [f"`api_url` is empty; Scale's API is at {DEFAULT_API_URL}"]
    problems = []
    # The tap appends each endpoint's path to api_url: a query or fragment would swallow it.
    if url.query or url.fragment:
        problems.append(
            f"`api_url` {url_shown!r} carries a query or fragment (after ? or #); it takes the "
            f"API's base URL alone, such as {DEFAULT_API_URL}"
        )
    if url.username is not None or url.password is not None:
        problems.append(
            f"`api_url` {url_shown!r} carries a user name or password; the API key belongs in "
            "the `api_key` setting, and the URL must carry none"
        )
    # The key travels in a header: over plain HTTP anyone on the path could read it.
    if url.scheme != "https" and not (url.scheme == "http" and url.hostname in LOCAL_HOSTS):
        problems.append(
            f"`api_url` {url_shown!r} must be an https:// URL (plain http:// is accepted only for "
            "localhost, e.g. a simulator): the API key would otherwise travel readable"
        )
    elif not url.hostname or port == 0:
        problems.append(
            f"`api_url` {url_shown!r} names no host; Scale's API is at {DEFAULT_API_URL}"
        )
    elif not _host_name(url.hostname):
        problems.append(
            f"`api_url` {url_shown!r} names no host a URL can hold (a part of its host name "
            f"between dots is empty or longer than 63 characters); Scale's API is at "
            f"{DEFAULT_API_URL}"
        )
    return problems


def _host_name(host: str) -> bool:
    """Whether a host name can be looked up: as the HTTP library encodes it before connecting."""
    try:
        host.encode("idna")
    except UnicodeError:
        return False
    return True


def _start_date_problems(config: MutableMapping[str, t.Any], warnings: list[str]) -> list[str]:
    value = str(config["start_date"]).strip()
    # A plain date, as Meltano's date_iso8601 kind writes it, is that day's start in UTC.
    text = f"{value}T00:00:00Z" if _DATE.fullmatch(value) else value
    if problem := moment_problem(text):
        if problem.startswith("is not"):
            problem = "is not an ISO 8601 date or timestamp"
        written = shown(config["start_date"])
        return [
            f"`start_date` {written} {problem}; write it like 2025-01-31 or 2025-01-31T00:00:00Z"
        ]
    moment = parse_timestamp(text)
    if moment > datetime.now(timezone.utc):
        warnings.append(
            f"`start_date` {value!r} is in the future: a first run reads nothing completed or "
            "delivered before it, which is everything so far"
        )
    config["start_date"] = format_timestamp(moment)
    return []


def _unknown_settings(
    config: Mapping[str, t.Any], properties: Mapping[str, t.Any]
) -> tuple[list[str], list[str]]:
    """Names no setting has: refused where they are a known setting misspelt, else ignored.

    Names starting with `_` are an orchestrator's own and ignored silently. A name close to
    none of the tap's settings may be one of Meltano's custom settings, which Meltano passes
    on to every run: refusing it could break a project, so it is only warned about.
    """
    problems, warnings = [], []
    known = sorted(set(properties) | SDK_SETTINGS)
    for name in config:
        if name in known or name.startswith("_"):
            continue
        if closest := closest_settings(name, properties):
            problems.append(
                f"`{name}` is not a tap-scale setting; did you mean "
                + " or ".join(f"`{setting}`" for setting in closest)
                + "?"
            )
        else:
            warnings.append(
                f"`{name}` is not a tap-scale setting, and is ignored (`tap-scale --about` "
                "lists the settings)"
            )
    return problems, warnings


def closest_settings(name: str, settings: Iterable[str]) -> list[str]:
    """The settings a mistyped name most likely meant, closest first (none if none is close)."""
    names = sorted(settings)
    typed = name.strip().lower().replace("-", "_").replace(" ", "_")
    if typed in names:
        return [typed]
    if typed in SCALE_WORDS:
        return list(SCALE_WORDS[typed])
    return difflib.get_close_matches(typed, names, n=2, cutoff=CLOSE_ENOUGH)


def environment_problems(schema: Mapping[str, t.Any], environ: Mapping[str, str]) -> list[str]:
    """Settings in ``TAP_SCALE_*`` variables the SDK cannot read (``--config ENV``)."""
    problems = []
    for name, setting in schema.get("properties", {}).items():
        variable = f"{_ENV_PREFIX}{name.upper()}"
        if variable not in environ:
            continue
        value, kinds = environ[variable], type_names(setting.get("type", "string"))
        try:
            if "integer" in kinds:
                int(value)
            elif "object" in kinds:
                _ = json.loads(value)
        except ValueError:
            wanted = JSON_TYPES["integer" if "integer" in kinds else "object"]
            written = "its value" if setting.get("secret") else repr(value)
            problems.append(f"{variable} is {written}, where {wanted} is expected")
    return problems


# Scale's endpoints that take no id: a 404 from one of them is a wrong `api_url`.
ID_FREE_ENDPOINTS = frozenset({"/projects", "/datasets"})


def not_found_advice(api_url: str, response: requests.Response) -> str | None:
    """What to do about a 404 that a wrong ``api_url`` explains, if it does."""
    base = urlparse(api_url).path.rstrip("/")
    if not base.endswith("/v2"):
        return (
            f"The `api_url` setting {shown_url(api_url)!r} does not end in /v2, where Scale's v2 "
            f"API is ({DEFAULT_API_URL}): every request to it is answered 404. Fix `api_url`."
        )
    endpoint = urlparse(str(response.request.url)).path.removeprefix(base)
    if endpoint in ID_FREE_ENDPOINTS:
        return (
            f"{endpoint} takes no ids, so this 404 means the `api_url` setting "
            f"{shown_url(api_url)!r} does not point at Scale's v2 API ({DEFAULT_API_URL}). "
            "Fix `api_url`."
        )
    return None


# --- The API's host -----------------------------------------------------------------------------


def unresolvable_host(api_url: str) -> tuple[str, str] | None:
    """``api_url``'s host name and why it cannot be resolved, when it definitely cannot.

    Only a definite "no such name" counts: a temporary failure of the resolver is left to the
    requests' own retries, and a URL reached through a proxy is resolved by the proxy, not here.
    """
    url = urlparse(api_url)
    host = url.hostname
    if not host or requests.utils.get_environ_proxies(api_url):
        return None
    try:
        socket.getaddrinfo(host, url.port or (443 if url.scheme == "https" else 80))
    except socket.gaierror as error:
        definite = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}
        if error.errno in definite:
            return host, str(error.strerror)
    except (OSError, UnicodeError):
        return None
    return None
