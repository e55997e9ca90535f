"""Guards on what tap-scale relies on inside the SDK and backoff beyond their public API.

Each test fails naming the private hook or the library's log line that changed beneath the tap,
so an upgrade that breaks one says where to look.
"""

from __future__ import annotations

import ast
import inspect
import logging
import typing as t
from pathlib import Path

import backoff
import pytest
import singer_sdk
from singer_sdk import Tap
from singer_sdk.plugin_base import PluginBase

from tap_scale.inputs import InputError
from tap_scale.sdk_logging import BACKOFF_HANDLERS, MISLEADING, quiet
from tap_scale.tap import TapScale

if t.TYPE_CHECKING:
    from tap_scale.testing import ScaleSimulator


def test_the_sdk_checks_settings_in_its_private_validate_config_hook() -> None:
    """`CheckedTap._validate_config` overrides `PluginBase._validate_config`, which the SDK runs."""
    assert "self._validate_config(" in inspect.getsource(PluginBase.__init__), (
        "PluginBase.__init__ no longer calls _validate_config: tap-scale's settings checks "
        "(tap_scale/settings.py) would not run"
    )
    parameters = inspect.signature(PluginBase._validate_config).parameters  # noqa: SLF001
    assert list(parameters) == ["self", "raise_errors"], "_validate_config's signature changed"
    # And the tap's checks run in it, before anything else, with defaults filled in as the
    # SDK's own check does (through the private `_config` it holds the settings in).
    with pytest.raises(InputError, match="`page_size` is 0"):
        TapScale(config={"api_key": "test_x", "page_size": 0})
    tap = TapScale(config={"api_key": "test_x"})
    assert tap.config["page_size"] == 100
    assert tap.config["opts"]


def test_the_tap_sets_up_its_mapper_as_checked_tap_redoes_it() -> None:
    """`CheckedTap.setup_mapper` redoes `Tap.setup_mapper`, for the selected streams only."""
    body = [
        line.strip()
        for line in inspect.getsource(Tap.setup_mapper).splitlines()
        if line.strip() and not line.strip().startswith(("def ", '"""', "@", "#"))
    ]
    assert body == [
        "super().setup_mapper()",
        "self.mapper.register_raw_streams_from_catalog(self.catalog)",
    ], (
        "Tap.setup_mapper changed: CheckedTap.setup_mapper (tap_scale/checked_tap.py) redoes "
        "it and must do what it now does"
    )


@pytest.fixture(scope="module")
def sdk_strings() -> set[str]:
    """Every string constant in the SDK's source (implicitly joined pieces joined)."""
    strings = set()
    for path in Path(singer_sdk.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                strings.add(node.value)
    return strings


@pytest.mark.parametrize("template", sorted(MISLEADING))
def test_each_misleading_line_is_still_logged_by_the_sdk_as_the_filter_expects(
    template: str, sdk_strings: set[str]
) -> None:
    assert template in sdk_strings, (
        f"The SDK no longer logs {template!r} with this template: update tap_scale/sdk_logging.py"
    )


def test_backoffs_own_retry_lines_are_demoted_to_debug(caplog: pytest.LogCaptureFixture) -> None:
    from backoff import _common  # noqa: PLC0415 - the private module the handlers live in

    assert all(hasattr(_common, name) for name in BACKOFF_HANDLERS), (
        f"backoff no longer logs retries from {sorted(BACKOFF_HANDLERS)}: "
        "update tap_scale/sdk_logging.py"
    )
    logger = logging.getLogger("tap-scale.test-stream")
    quiet(logger)
    tries = []

    # As the SDK decorates each request: backoff logs to the stream's logger.
    @backoff.on_exception(backoff.constant, LookupError, max_tries=2, interval=0, logger=logger)
    def failing() -> None:
        tries.append(1)
        raise LookupError

    with caplog.at_level(logging.INFO), pytest.raises(LookupError):
        failing()
    assert len(tries) == 2
    assert not [r for r in caplog.records if r.levelno >= logging.INFO], caplog.text
    with caplog.at_level(logging.DEBUG), pytest.raises(LookupError):
        failing()
    assert [r for r in caplog.records if r.funcName in BACKOFF_HANDLERS], "kept for debugging"


def test_no_traceback_leaves_the_tap_for_input_errors_in_process(
    simulator: ScaleSimulator,
) -> None:
    """Library use gets the same error as the command line: an InputError naming the setting."""
    with pytest.raises(InputError, match="did you mean `project_names`"):
        TapScale(
            config={"api_key": simulator.api_key, "api_url": simulator.url, "projcet_names": []}
        )
    assert simulator.requests == []
