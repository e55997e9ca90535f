"""The key is never shown: whatever produced a message, it is masked before it is written."""

from __future__ import annotations

import json
import subprocess
import typing as t
from pathlib import Path

import pytest
from singer_sdk.singerlib import RecordMessage

from tap_scale import redaction
from tap_scale.stops import ScaleMessageWriter
from tests.tap_run import run_tap

if t.TYPE_CHECKING:
    from tap_scale.testing import ScaleSimulator

PROJECT_DIR = Path(__file__).resolve().parents[1]


def debug_logging(tmp_path: Path) -> dict[str, str]:
    """Environment for a run that logs everything, the HTTP library's debug lines included."""
    log_config = tmp_path / "logging.json"
    log_config.write_text(
        json.dumps(
            {
                "version": 1,
                "disable_existing_loggers": False,
                "handlers": {"console": {"class": "logging.StreamHandler", "level": "DEBUG"}},
                "root": {"level": "DEBUG", "handlers": ["console"]},
            }
        )
    )
    return {"LOGLEVEL": "DEBUG", "SINGER_SDK_LOG_CONFIG": str(log_config)}


@pytest.mark.parametrize(
    "api_key",
    [["live_pasted_as_a_list_8c1f"], {"key": "live_pasted_as_an_object_8c1f"}, 73918264551],
    ids=["list", "object", "number"],
)
def test_a_key_of_the_wrong_type_is_named_but_never_quoted(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path, api_key: t.Any
) -> None:
    run = run_tap(tmp_path, {**config, "api_key": api_key}, check=False)
    assert run.returncode == 1
    assert "api_key" in run.stderr
    for secret in redaction._strings(api_key):  # noqa: SLF001 - the forms the key was pasted in
        assert secret not in run.stdout + run.stderr
    assert simulator.requests == []


def test_credentials_in_api_url_are_refused_and_never_shown(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    # Scale also takes the key as a Basic user name, so a URL can carry it: the tap refuses such
    # a URL (the key belongs in `api_key`), naming the URL without what it carried.
    local = simulator.url.replace("http://", f"http://{simulator.api_key}:hunter2@")
    remote = "http://live_in_the_url_55aa:hunter2@api.example.com/v2"
    for url, shown in ((local, simulator.url), (remote, "http://api.example.com/v2")):
        refused = run_tap(tmp_path, {**config, "api_url": url}, check=False)
        assert refused.returncode == 1
        assert f"`api_url` {shown!r} carries a user name or password" in refused.stderr
        for secret in (simulator.api_key, "live_in_the_url_55aa", "hunter2"):
            assert secret not in refused.stdout + refused.stderr
    assert simulator.requests == []


@pytest.mark.parametrize("refusal", ["server errors", "a rejected key"])
def test_an_error_page_quoting_the_key_is_shown_without_it(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path, refusal: str
) -> None:
    simulator.faults.echo_credentials = True
    if refusal == "server errors":
        # Every other one an HTML page: cut to 200 characters in messages, masked before.
        simulator.faults.server_error = 1.0
        config = {**config, "max_tries": 3, "max_retry_wait": 0}
        key = simulator.api_key
    else:
        key = "live_wrong_key_4f7e1b9c"
        config = {**config, "api_key": key}
    run = run_tap(tmp_path, config, check=False, env=debug_logging(tmp_path))
    assert run.returncode == 1
    assert "Authorization: Bearer [REDACTED]" in run.stderr
    assert key not in run.stdout + run.stderr
    assert key[4:12] not in run.stderr, "not even part of it"


def test_a_record_holding_the_key_is_written_without_it(capfd: pytest.CaptureFixture[str]) -> None:
    redaction.register(["live_in_a_record_93ab"])
    record = {"task_id": "task_1", "metadata": {"note": 'pasted "live_in_a_record_93ab" here'}}
    ScaleMessageWriter().write_message(RecordMessage(stream="tasks", record=record))
    written = json.loads(capfd.readouterr().out)
    assert written["record"]["metadata"]["note"] == 'pasted "[REDACTED]" here'


def test_git_ignores_the_env_file_where_meltano_keeps_the_key() -> None:
    done = subprocess.run(
        ["git", "check-ignore", "--no-index", "-q", ".env"], cwd=PROJECT_DIR, check=False
    )
    assert done.returncode == 0, ".env is not in .gitignore: `git add -A` would commit the key"
