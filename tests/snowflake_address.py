"""Where Snowflake's connector dials, in target-snowflake's own virtualenv: the emulator.

tests/test_snowflake.py installs this module, with a ``.pth`` file that imports it, into the
target-snowflake that its scratch project installs (Meltano drops ``PYTHONPATH`` from a plugin's
environment). With ``SNOWFLAKE_EMULATOR_URL`` set, every connection the target opens goes to that
address over plain HTTP instead of ``https://<account>.snowflakecomputing.com``: target-snowflake
has no setting for the host, port or protocol the connector takes. Nothing else changes: the
account, user, key and every statement are the target's own.
"""

from __future__ import annotations

import functools
import os
import typing as t
from urllib.parse import urlsplit

ADDRESS = "SNOWFLAKE_EMULATOR_URL"


def dial_the_emulator() -> None:
    """Point every new Snowflake connection at ``$SNOWFLAKE_EMULATOR_URL``, where it is set."""
    if not (url := os.environ.get(ADDRESS)):
        return
    try:
        from snowflake.connector import connection  # noqa: PLC0415 - only in the target's venv
    except ImportError:
        return
    address = urlsplit(url)
    connect = connection.SnowflakeConnection.__init__

    @functools.wraps(connect)
    def to_the_emulator(self: connection.SnowflakeConnection, **kwargs: t.Any) -> None:
        kwargs.update(host=address.hostname, port=address.port, protocol=address.scheme)
        connect(self, **kwargs)

    connection.SnowflakeConnection.__init__ = to_the_emulator  # type: ignore[method-assign,assignment]


dial_the_emulator()
