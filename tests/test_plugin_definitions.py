"""The Meltano Hub definition and meltano.yml describe the tap exactly as ``--about`` does."""

from __future__ import annotations

import json
import subprocess
import typing as t
from pathlib import Path

import pytest
import yaml

from tap_scale.tap import TapScale
from tests.tap_run import TAP

PROJECT_DIR = Path(__file__).resolve().parents[1]

# Meltano's setting kinds for the JSON Schema types the tap's settings use.
KINDS = {"string": "string", "integer": "integer", "boolean": "boolean", "array": "array"}


def expected_kind(schema: dict[str, t.Any]) -> str:
    if schema.get("format") == "date-time":
        return "date_iso8601"
    types = schema.get("type", ["object"])
    return next(KINDS.get(name, "object") for name in types if name != "null")


@pytest.fixture(scope="module")
def about() -> dict[str, t.Any]:
    done = subprocess.run([*TAP, "--about", "--format=json"], capture_output=True, check=True)
    return t.cast("dict[str, t.Any]", json.loads(done.stdout))


def hub_definition() -> dict[str, t.Any]:
    return t.cast(
        "dict[str, t.Any]", yaml.safe_load((PROJECT_DIR / "hub/tap-scale.yml").read_text())
    )


def meltano_extractor() -> dict[str, t.Any]:
    project = yaml.safe_load((PROJECT_DIR / "meltano.yml").read_text())
    return next(p for p in project["plugins"]["extractors"] if p["name"] == "tap-scale")


@pytest.mark.parametrize("definition", [hub_definition, meltano_extractor])
def test_definition_matches_about(
    about: dict[str, t.Any], definition: t.Callable[[], dict[str, t.Any]]
) -> None:
    plugin = definition()
    assert plugin["namespace"] == "tap_scale"
    assert sorted(plugin["capabilities"]) == sorted(about["capabilities"])

    properties = about["settings"]["properties"]
    assert [s["name"] for s in plugin["settings"]] == list(properties)
    for setting in plugin["settings"]:
        schema = properties[setting["name"]]
        assert setting["kind"] == expected_kind(schema), setting["name"]
        assert setting.get("description") == schema.get("description"), setting["name"]
        assert setting.get("sensitive", False) == schema.get("secret", False), setting["name"]
        assert setting.get("value") == schema.get("default"), setting["name"]
    required = about["settings"].get("required", [])
    assert plugin["settings_group_validation"] == [required]


def test_hub_definition_has_what_the_hub_needs() -> None:
    hub = hub_definition()
    for field in ("name", "variant", "label", "description", "repo", "pip_url", "keywords"):
        assert hub[field], field
    assert hub["maintenance_status"] in {"active", "beta", "development"}


def test_about_and_the_hub_name_every_stream(about: dict[str, t.Any]) -> None:
    description = about["description"]
    hub = " ".join(str(hub_definition()["description"]).split())
    for stream in TapScale(config={"api_key": "test_x"}).streams:
        assert stream in description, f"`tap-scale --about` does not name {stream}"
    for stream in ("task_responses", "response_schemas", "dataset_tasks"):
        assert stream in hub, f"hub/tap-scale.yml does not name {stream}"
