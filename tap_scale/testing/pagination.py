"""Keyset pagination with opaque, signed `next_token`s bound to the query that issued them.

Results are ordered by a key derived from each id: by default its hash, so they look shuffled
(Scale promises no order) yet are deterministic; a listing of tasks may be given another key
(`tap_scale.testing.orders`). A token names the last key served, not an offset: an item
inserted mid-pagination lands wherever its key falls, before or after the cursor, as it would
on a real keyset-paginated API.

Every token issued is distinct, even for the same position of the same query, as real opaque
tokens are: each carries a random nonce that resuming ignores. A client must not expect to get
the same token twice, nor use token equality to tell two positions apart.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import typing as t
from bisect import bisect_right

from tap_scale.testing.params import bad_request

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

T = t.TypeVar("T")

KEY_BYTES = 12
# The longest key of any order (`tap_scale.testing.orders`: a batch's moment and id, and a hash).
MAX_KEY_BYTES = 32
# The cursor before every key: `bisect_right` puts it ahead of all of them, so a token holding
# it resumes from the very start (as an empty page served for a first request must).
START = b""
_SCOPE_BYTES = 16
# 6 bytes make both token lengths of hashed keys multiples of 3, so their base64 needs no
# padding; tokens only need to differ from the few others issued for the same position, which
# 48 bits ensure.
_NONCE_BYTES = 6
_MAC_BYTES = 16
_VERSION = b"\x02"  # 1 had no nonce; those tokens are refused like any other stranger's
_HEADER_BYTES = len(_VERSION) + _SCOPE_BYTES + _NONCE_BYTES
# A token holds a whole key of its listing's order, or none (START).
_TOKEN_LENGTHS = range(_HEADER_BYTES + _MAC_BYTES, _HEADER_BYTES + MAX_KEY_BYTES + _MAC_BYTES + 1)
# The 400 messages for a next_token this API did not issue, or issued for another query.
NOT_ISSUED_HERE = "Invalid next_token: it is not a token this API issued."
ISSUED_FOR_ANOTHER_QUERY = (
    "Invalid next_token: it was issued for a different query. Repeat the first "
    "request's parameters unchanged and add only next_token."
)


def order_key(item_id: str) -> bytes:
    """The stable pseudo-random position of an id in every listing."""
    return hashlib.sha256(item_id.encode()).digest()[:KEY_BYTES]


class SortedIndex:
    """Ids kept in order of their keys, for keyset pages."""

    __slots__ = ("_ids", "_key", "_keys")

    def __init__(self, ids: Iterable[str] = (), key: Callable[[str], bytes] = order_key) -> None:
        """Index these ids by `key`, a distinct key each, sorting once (not once per insertion)."""
        self._key = key
        pairs = sorted((key(item_id), item_id) for item_id in ids)
        self._keys = [item_key for item_key, _ in pairs]
        self._ids = [item_id for _, item_id in pairs]

    def __len__(self) -> int:
        """How many ids are indexed."""
        return len(self._ids)

    def insert(self, item_id: str) -> None:
        """Add an id at the position its key gives it."""
        key = self._key(item_id)
        position = bisect_right(self._keys, key)
        self._keys.insert(position, key)
        self._ids.insert(position, item_id)

    def ids(self) -> list[str]:
        """Every id, in listing order."""
        return list(self._ids)

    def after(self, key: bytes | None) -> Iterator[tuple[bytes, str]]:
        """(key, id) pairs strictly after `key` (all of them when `key` is None or START)."""
        start = 0 if key is None else bisect_right(self._keys, key)
        for position in range(start, len(self._ids)):
            yield self._keys[position], self._ids[position]


def keyset_page(
    index: SortedIndex, after: bytes | None, limit: int, accept: Callable[[str], T | None]
) -> tuple[list[T], bytes | None]:
    """One page of accepted items after a cursor, and the cursor of the next page if any.

    `accept` maps an id to the item to serve, or None to filter it out. The next cursor is
    returned only when another accepted item exists, so the last page carries no token.
    """
    items: list[T] = []
    last: bytes | None = None
    for key, item_id in index.after(after):
        item = accept(item_id)
        if item is None:
            continue
        if len(items) == limit:
            return items, last
        items.append(item)
        last = key
    return items, None


def query_scope(path: str, params: Mapping[str, Sequence[str]]) -> bytes:
    """A digest of the endpoint and every parameter except `next_token`.

    Repeated values are sorted, since `opts=a&opts=b` and `opts=b&opts=a` ask the same thing.
    """
    canonical = sorted((name, sorted(values)) for name, values in params.items())
    text = json.dumps([path, [pair for pair in canonical if pair[0] != "next_token"]])
    return hashlib.sha256(text.encode()).digest()[:_SCOPE_BYTES]


class PageTokens:
    """Issues and checks `next_token`s, signed with a secret of one simulator instance."""

    def __init__(self, secret: bytes) -> None:
        """Sign with this secret; tokens from another instance are refused."""
        self._secret = secret

    def issue(self, scope: bytes, last_key: bytes) -> str:
        """A new token resuming after `last_key` (START: from the start), for this scope only.

        Never the same token twice: a random nonce is signed along with the cursor.
        """
        payload = _VERSION + scope + secrets.token_bytes(_NONCE_BYTES) + last_key
        return _b64encode(payload + self._mac(payload))

    def resume_after(self, token: str, scope: bytes) -> bytes:
        """The key a token resumes after (START for the start), if it is genuine and ours.

        Raises:
            ApiError: 400 for a token that is not one of ours, or one issued for other parameters.
        """
        raw = _b64decode(token)
        if raw is None or len(raw) not in _TOKEN_LENGTHS or not raw.startswith(_VERSION):
            raise bad_request(NOT_ISSUED_HERE)
        payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise bad_request(NOT_ISSUED_HERE)
        if not hmac.compare_digest(payload[len(_VERSION) : len(_VERSION) + _SCOPE_BYTES], scope):
            raise bad_request(ISSUED_FOR_ANOTHER_QUERY)
        return payload[_HEADER_BYTES:]  # the nonce only made the token unique

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()[:_MAC_BYTES]


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(token: str) -> bytes | None:
    if not token.isascii():
        return None
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
