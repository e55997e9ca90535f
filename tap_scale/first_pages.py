"""Each partition's first page of tasks, asked for while the sync's scope is looked up.

A sync's first round trip is the lookup of its scope (`tap_scale.selection`): the projects,
which confirm the configured ids and tell Scale's clock, and Scale's clock bounds the sync
(`answers.ServerClock`). The tasks' first requests used to wait for that bound, a round trip
more, though a partition's first page is needed whatever the bound turns out to be: as the
sample its windows are planned from (`tap_scale.windows`), or, in an incremental sync of a few
new tasks, as all there is. So where the settings name the projects (`project_ids`), the first
page of each one's completed tasks is asked for at once, beside the lookup, with no upper
bound. Its partition's whole-range window then takes it in place of its own first request
(`FirstPages.take`), keeping only the tasks completed before the bound; where more pages
follow and the window is not cut up, the window is read again bounded, from its start, as a
token belongs to the query it came from.

Nothing is emitted before the lookup has confirmed the scope: the pages wait for the readers,
which start after it. A first page that failed, or was asked for another lower bound than the
window's (a bookmark Scale's clock proves to be in the future), is not used.
"""

from __future__ import annotations

import threading
import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Iterable, Sequence
    from datetime import datetime

Record = dict[str, t.Any]
Page = tuple[list[Record], bool]
#: A partition's context, and the lower bound (`completed_after`) its first page is asked from.
Ask = tuple[t.Any, "datetime | None"]


class _Asked:
    """One first page in flight: what it was asked from, and what came back."""

    def __init__(self, after: datetime | None) -> None:
        self.after = after
        self.page: Page | None = None
        self.done = threading.Event()


class FirstPages:
    """The first pages of some partitions, each fetched in a background thread of its own."""

    def __init__(
        self,
        asks: Sequence[Ask],
        first_page: Callable[[t.Any, datetime | None], Iterable[Page]],
        key: Callable[[t.Any], Hashable],
    ) -> None:
        """Ask for each partition's first page: ``first_page(context, after)`` reads its pages."""
        self._key = key
        self._asked: dict[Hashable, _Asked] = {}
        for context, after in asks:
            asked = _Asked(after)
            self._asked[key(context)] = asked
            # Daemon threads: a lookup that fails ends the sync without waiting for them.
            threading.Thread(
                target=self._fetch, args=(asked, first_page, context), daemon=True
            ).start()

    @staticmethod
    def _fetch(
        asked: _Asked,
        first_page: Callable[[t.Any, datetime | None], Iterable[Page]],
        context: t.Any,  # noqa: ANN401 - the SDK's contexts
    ) -> None:
        pages: Iterable[Page] = ()
        try:
            pages = iter(first_page(context, asked.after))
            asked.page = next(pages, None)
        except Exception:  # noqa: BLE001 - the window asks again itself, and says what is wrong
            asked.page = None
        finally:
            close = getattr(pages, "close", None)
            if close is not None:
                close()
            asked.done.set()

    def take(self, context: t.Any, after: datetime | None) -> Page | None:  # noqa: ANN401
        """The partition's first page, if one was asked from `after` and came; once only."""
        asked = self._asked.pop(self._key(context), None)
        if asked is None or asked.after != after:
            return None
        asked.done.wait()
        return asked.page
