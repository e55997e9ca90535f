"""The SDK's Tap, with every input checked as a whole before it is used.

The one place tap-scale hooks into how the SDK reads its input: the `--config`, `--state` and
`--catalog` files, the settings, the catalog, the state, and the stream maps. Whatever is wrong
ends the run as one paragraph naming it (`InputError`), before the first request where it can,
and always before the first record. One hook is private, `_validate_config`:
`tests/test_sdk_coupling.py` fails, naming it, if the SDK changes beneath it.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import sys
import typing as t

from singer_sdk import Tap
from singer_sdk.exceptions import (
    ConfigValidationError,
    MapExpressionError,
    StreamMapConfigError,
)
from singer_sdk.mapper import SameRecordTransform
from singer_sdk.plugin_base import PluginBase
from singer_sdk.singerlib import Catalog

from tap_scale import inputs, settings
from tap_scale.inputs import InputError
from tap_scale.state import FIX_STATE, ReplicationKey, check_state

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    import click

# What to do about a catalog the SDK cannot read.
FIX_CATALOG = (
    "Pass the catalog `tap-scale --discover` writes, with streams selected in its metadata (or "
    "let Meltano write it: `meltano select tap-scale ...`)."
)


class CheckedTap(Tap):
    """A Tap that checks its settings, catalog and state whole, each problem named."""

    @override
    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        """Load and check the settings, the catalog and the state, in that order."""
        # A catalog the SDK cannot read is reported once the settings have been checked.
        catalog = kwargs.get("catalog")
        catalog_problems = []
        if isinstance(catalog, dict) and not isinstance(catalog, Catalog):
            catalog_problems = inputs.check_catalog(catalog, self.own_schemas())
        if catalog_problems:
            kwargs["catalog"] = None
        try:
            super().__init__(*args, **kwargs)
        except (MapExpressionError, StreamMapConfigError) as error:
            msg = "The `stream_maps` setting cannot be used"
            raise InputError(msg, [str(error)], settings.CHANGE_SETTINGS) from None
        except ConfigValidationError as error:
            # A check of the SDK's own beyond the tap's (as it sets up flattening, say).
            msg = "The settings cannot be used"
            problems = list(error.errors) or [str(error)]
            raise InputError(msg, problems, settings.CHANGE_SETTINGS) from None
        except ValueError:
            # The SDK reads `--config ENV` settings before any check, and fails on the first
            # one it cannot convert.
            problems = settings.environment_problems(self.config_jsonschema, os.environ)
            if kwargs.get("parse_env_config") and problems:
                msg = "The settings in the environment cannot be used"
                raise InputError(msg, problems, "Fix those variables and run again.") from None
            raise
        if catalog_problems:
            msg = "The catalog cannot be used"
            raise InputError(msg, catalog_problems, FIX_CATALOG)
        if self.input_catalog is not None:
            self._warn_about_catalog()

    @classmethod
    def own_schemas(cls) -> Iterable[Mapping[str, t.Any]]:
        """The schemas of the tap's streams, as discovery writes them (none by default)."""
        return ()

    @override
    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        """Check the settings, every problem at once (the SDK's private hook for this).

        The SDK checks the settings against `config_jsonschema` in this method, before it reads
        the catalog and the state; the tap's check covers that schema and what it cannot say.
        """
        schema = self.config_jsonschema
        self.append_builtin_config(schema)
        # The SDK's own check writes the defaults into the settings; this one does the same.
        findings = settings.check_settings(self._config, schema)
        # Discovery (`raise_errors` off) works whatever the settings: the sync reports them.
        if raise_errors:
            for warning in findings.warnings:
                self.logger.warning("Settings: %s.", warning)
            if findings.problems:
                msg = "The settings cannot be used"
                raise InputError(msg, findings.problems, settings.CHANGE_SETTINGS)
        return findings.problems

    @override
    def setup_mapper(self) -> None:
        """The SDK's stream maps, applied only to the streams the catalog selects.

        The SDK checks a stream's map against the stream's selected schema, which for a stream
        the catalog does not select is empty: a map of `tasks` naming `task_id` then stopped
        every sync that selected `delivery_tasks` alone. A stream that is not selected emits
        nothing, so its map is not applied at all, not even its `__filter__`: a parent stream
        read only for its children (`deliveries` for `delivery_tasks`) feeds them every record.
        """
        self._check_stream_map_names()
        PluginBase.setup_mapper(self)  # Tap.setup_mapper's first half: the mapper itself
        selected, unselected = Catalog(), []
        for name, entry in self.catalog.items():
            if entry.metadata.resolve_selection()[()]:
                selected[name] = entry
            else:
                unselected.append(entry)
        # Tap.setup_mapper's second half, for the selected streams alone.
        self.mapper.register_raw_streams_from_catalog(selected)
        for entry in unselected:
            name = entry.stream or entry.tap_stream_id
            self.mapper.stream_maps[name] = [
                SameRecordTransform(
                    name,
                    entry.schema.to_dict(),
                    entry.key_properties,
                    flattening_options=self.mapper.flattening_options,
                )
            ]

    def _check_stream_map_names(self) -> None:
        """A map under a name that is no stream (nor a pattern, nor an alias) is never applied.

        The SDK ignores it silently: `{"task": ...}` for `tasks` synced every record unmapped,
        with exit code 0. A name close to a stream's is refused naming the stream; any other
        only warned about (a map shared between taps may name another tap's streams).
        """
        maps = self.config.get("stream_maps")
        if not isinstance(maps, dict):
            return
        streams = sorted(self.streams)
        problems = []
        for name, definition in maps.items():
            if name in self.streams and isinstance(definition, dict):
                problems += self._dropped_fields_unknown(name, definition)
            if (
                name.startswith("__")  # the SDK's own keys, `__else__`
                or any(fnmatch.fnmatch(stream, name) for stream in streams)
                or (isinstance(definition, dict) and "__source__" in definition)
            ):
                continue
            if guess := _did_you_mean(name, streams):
                problems.append(
                    f"`stream_maps` maps `{name}`, which is not a stream of {self.name}, so the "
                    f"map would never apply; did you mean {guess}?"
                )
            else:
                self.logger.warning(
                    "Settings: `stream_maps` maps `%s`, which is not a stream of %s: that map "
                    "is never applied (the streams: %s).",
                    name,
                    self.name,
                    ", ".join(streams),
                )
        if problems:
            msg = "The `stream_maps` setting cannot be used"
            raise InputError(msg, problems, settings.CHANGE_SETTINGS)

    def _dropped_fields_unknown(self, stream: str, definition: dict[str, t.Any]) -> list[str]:
        """A field a map drops (`__NULL__`) that the stream lacks: refused if a field's misspelt.

        Any other is only warned about: a catalog may have left that field out already.
        """
        fields = sorted(self.streams[stream].schema.get("properties", {}))
        problems = []
        for field, expression in definition.items():
            if field.startswith("__") or field in fields or expression not in {None, "__NULL__"}:
                continue
            if guess := _did_you_mean(field, fields):
                problems.append(
                    f"`stream_maps.{stream}` drops `{field}`, which is not a field of `{stream}`, "
                    f"so nothing would be dropped; did you mean {guess}?"
                )
            else:
                self.logger.warning(
                    "Settings: `stream_maps.%s` drops `%s`, which is not a field of `%s`: "
                    "nothing is dropped (its fields: %s).",
                    stream,
                    field,
                    stream,
                    ", ".join(fields),
                )
        return problems

    @override
    def load_state(self, state: dict[str, t.Any]) -> None:
        """Check the whole state before the SDK loads it, and before any record."""
        keys = {
            name: ReplicationKey.of(stream.replication_key, stream.schema)
            for name, stream in self.streams.items()
        }
        findings = check_state(state, keys)
        for warning in findings.warnings:
            self.logger.warning("State: %s.", warning)
        if findings.problems:
            msg = "The state cannot be used"
            raise InputError(msg, findings.problems, FIX_STATE)
        super().load_state(state)

    def _warn_about_catalog(self) -> None:
        catalog = t.cast("dict[str, t.Any]", self.input_catalog)
        if unknown := sorted(set(catalog) - set(self.streams)):
            self.logger.warning(
                "The catalog names streams %s does not have, which are ignored: %s. "
                "Its streams: %s.",
                self.name,
                ", ".join(unknown),
                ", ".join(self.streams),
            )
        if not any(stream.selected for stream in self.streams.values()):
            self.logger.warning(
                "The catalog selects no stream: this run syncs nothing. Select streams with "
                "`meltano select %s <stream> '*'`, or with `\"selected\": true` in the "
                "metadata of a stream's empty breadcrumb in the catalog.",
                self.name,
            )

    @override
    @classmethod
    def cb_config(cls, ctx: click.Context, param: click.Option, value: tuple[str, ...]) -> t.Any:
        """Read the `--config` files, each one's problem named, before the SDK merges them."""
        for path in value:
            if path != "ENV":
                inputs.read_json_object(path, "config")
        return super().cb_config(ctx, param, value)

    @override
    @classmethod
    def get_singer_command(cls) -> click.Command:
        """The SDK's command; `--state` and `--catalog` files are read with clear errors."""
        command = super().get_singer_command()
        for param in command.params:
            if param.name in {"state", "catalog"}:
                param.type = inputs.JsonObjectFile(param.name)
        return command


def _did_you_mean(name: str, known: Sequence[str]) -> str | None:
    """The one or two known names close to a misspelt one, as a person reads them; else None."""
    close = difflib.get_close_matches(name, known, n=2, cutoff=0.75)
    return " or ".join(f"`{match}`" for match in close) if close else None
