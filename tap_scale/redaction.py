"""The one place secrets are taken out of everything the tap writes: its log and its messages.

Secrets are registered once the settings are read: every setting the tap's schema marks secret
(the API key), in each form it can travel in (the key alone, and the Basic credentials Scale also
accepts), and any user name or password written into a URL setting. Every log record is redacted
as it is made, whatever produced its text (a validation error quoting a value, a server's error
page, a retry line, a traceback), and every Singer message as it is written.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
import typing as t
from urllib.parse import unquote, urlsplit

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

MASK = "[REDACTED]"
# Shorter values are not masked: a secret of one or two characters would mask half the log.
MIN_SECRET_LENGTH = 4
# A URL's user name and password (`https://user:password@host`), whoever wrote the URL.
_URL_CREDENTIALS = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)[^\s/@'\"<>]+@", re.IGNORECASE)

_secrets: tuple[str, ...] = ()
_secret_bytes: tuple[tuple[bytes, bytes], ...] = ()
#: Every character of a registered secret: what a JSON escape could spell one with.
_secret_characters: frozenset[str] = frozenset()
# A JSON escape that stands for one character (`\u0041`, `\/`), as raw JSON may hold them.
_ESCAPE = re.compile(rb"\\u([0-9a-fA-F]{4})|\\/")
# UTF-16 surrogates: an escape of one is half of a character, which a secret's could be.
_SURROGATES = range(0xD800, 0xE000)
_lock = threading.Lock()


def redact(text: str) -> str:
    """The text with every registered secret, and any credentials in a URL, masked."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    if "@" in text:
        text = _URL_CREDENTIALS.sub(rf"\g<scheme>{MASK}@", text)
    return text


def redact_bytes(data: bytes | bytearray) -> bytes | bytearray:
    """Serialized JSON with every registered secret masked (a Singer message as written)."""
    for secret, mask in _secret_bytes:
        if secret in data:
            data = data.replace(secret, mask)
    return data


def may_hide_secrets(json_text: bytes) -> bool:
    r"""Whether raw JSON may spell a registered secret in escapes, which `redact_bytes` cannot see.

    JSON text copied out as it came (`tap_scale.reading.task_pages`) is redacted as bytes, so a key
    written `\u006c\u0069...` would pass and be read whole by the target. Text for which this
    is True must be parsed and written anew, which writes every character plainly.
    """
    characters = _secret_characters
    # One regular expression scan: three times faster than `in` with a two-byte needle.
    first = _ESCAPE.search(json_text) if characters else None
    if first is None:
        return False
    for escape in _ESCAPE.finditer(json_text, first.start()):
        code = escape[1]
        if code is None:
            if "/" in characters:
                return True
            continue
        unit = int(code, 16)
        # Half of a pair: the character it is part of might be one of a secret's.
        if unit in _SURROGATES or chr(unit) in characters:
            return True
    return False


def register(values: Iterable[str]) -> None:
    """Mask these values, and the Basic credentials and URL-encoded forms they travel in."""
    forms = set(_secrets)
    for value in values:
        if len(value) < MIN_SECRET_LENGTH:
            continue
        forms.add(value)
        # Basic auth carries `user:` in base64: what an error page quoting headers would show.
        forms.add(base64.b64encode(f"{value}:".encode()).decode().rstrip("="))
    adopt(forms)


def registered() -> tuple[str, ...]:
    """Every form of every secret registered, for another process to `adopt`."""
    return _secrets


def adopt(forms: Iterable[str]) -> None:
    """Mask exactly these forms of secrets, as `registered` gave them (the row process)."""
    global _secrets, _secret_bytes, _secret_characters  # noqa: PLW0603 - one registry per process
    with _lock:
        # Longest first, so that a secret containing another is masked whole.
        _secrets = tuple(sorted(set(forms), key=len, reverse=True))
        # As JSON writes them (msgspec: UTF-8, with quotes and backslashes escaped).
        _secret_bytes = tuple(
            (secret.replace("\\", "\\\\").replace('"', '\\"').encode(), MASK.encode())
            for secret in _secrets
        )
        _secret_characters = frozenset("".join(_secrets))


def register_settings(config: Mapping[str, t.Any], schema: Mapping[str, t.Any]) -> None:
    """Register the secrets among these settings: secret ones, and credentials in URLs."""
    values: list[str] = []
    properties = schema.get("properties", {})
    for name, value in config.items():
        if properties.get(name, {}).get("secret"):
            # Whatever its type: a key pasted as a list is still the key.
            values.extend(_strings(value))
        elif isinstance(value, str) and "://" in value:
            values.extend(_url_credentials(value))
    register(values)


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value, value.strip()]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, (list, tuple)):
        return [s for item in value for s in _strings(item)]
    return [str(value)] if value is not None else []


def _url_credentials(url: str) -> list[str]:
    try:
        parts = urlsplit(url.strip())
        user, password = parts.username, parts.password
    except ValueError:  # not a URL urlsplit can read: the pattern in `redact` still applies
        return []
    return [unquote(part) for part in (user, password) if part] + [
        part for part in (user, password) if part
    ]


def _redacted_record(record: logging.LogRecord) -> logging.LogRecord:
    """Mask secrets in a log record's message and traceback, leaving clean records untouched."""
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a broken logging call; its handler reports it
        record.msg, record.args = redact(str(record.msg)), ()
        return record
    details = ""
    if record.exc_info:
        details = logging.Formatter().formatException(record.exc_info)
    if record.stack_info:
        details += "\n" + record.stack_info
    if redact(message) == message and redact(details) == details:
        return record
    # Formatters read `msg`, `args` and `exc_info` (the SDK's structured one too): the masked
    # text replaces all three, so that none of them can bring the secret back.
    record.msg = redact(f"{message}\n{details}" if details else message)
    record.args = ()
    record.exc_info = record.exc_text = record.stack_info = None
    return record


_installed = False


def install() -> None:
    """Redact every log record the process makes from now on (once; later calls do nothing)."""
    global _installed  # noqa: PLW0603
    with _lock:
        if _installed:
            return
        _installed = True
    make_record = logging.getLogRecordFactory()

    def factory(*args: t.Any, **kwargs: t.Any) -> logging.LogRecord:  # noqa: ANN401
        return _redacted_record(make_record(*args, **kwargs))

    logging.setLogRecordFactory(factory)
