"""Lines of the SDK's and backoff's logs that mislead a person reading tap-scale's log.

Each is demoted to DEBUG by a filter on the logger that writes it, matched on the template its
library logs with (not on the formatted text), so nothing else is touched.
`tests/test_sdk_coupling.py` fails, naming the line, if a library stops logging one this way.
"""

from __future__ import annotations

import logging
import sys

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

# The SDK's templates, each with why it misleads.
MISLEADING = frozenset(
    {
        # Logged for every partition of an unsorted stream, about twenty times a run. tap-scale's
        # unsorted streams move a partition's bookmark only once the partition is read whole, so an
        # interrupted sync resumes from the last finished partitions and loses nothing.
        "Stream is assumed to be unsorted, progress is not resumable if interrupted",
        # Logged for every task without a completed_at: tasks that are not completed have none by
        # design, and their partitions are read in full on every run.
        "New replication value is null",
        # Logged as ERROR by a stream's sync before any exception leaves it: before every error
        # the tap handles (its own stop message says what happened) and before the aborts that end
        # each stream of a successful `--test`.
        "An unhandled error occurred while syncing '%s'",
    }
)
# backoff's own handlers, which the SDK hands the stream's logger: they log each retry and the
# giving up once more, beside the tap's own retry line and final message.
BACKOFF_HANDLERS = frozenset({"_log_backoff", "_log_giveup"})


class DemoteMisleading(logging.Filter):
    """Turns the lines listed in `MISLEADING` and backoff's retry lines into DEBUG lines.

    Kept for whoever debugs (`LOGLEVEL=DEBUG`), out of everyone else's log.
    """

    @override
    def filter(self, record: logging.LogRecord) -> bool:
        misleading = record.msg in MISLEADING or (
            record.funcName in BACKOFF_HANDLERS and "backoff" in record.pathname
        )
        if not misleading:
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


_FILTER = DemoteMisleading()


def quiet(*loggers: logging.Logger) -> None:
    """Demote the misleading lines these loggers write (a logger's filters see only its own)."""
    for logger in loggers:
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


# The SDK's state helpers log under "singer_sdk" itself, from import on.
quiet(logging.getLogger("singer_sdk"))
