"""End to end: the README's RLHF queries, in PostgreSQL and DuckDB loaded by real Meltano.

Each test runs ``meltano run`` twice with the streams of tasks and their rows selected; between
the runs the simulated Scale reworks tasks (their annotations done afresh) and completes others.
Then every SQL query of the README's "Querying RLHF data" runs as written, and its result must
equal the numbers computed here in Python from Scale's raw tasks, which know nothing of the tap's
flat rows.
"""

from __future__ import annotations

import json
import re
import typing as t
from collections import defaultdict

import pytest

from tap_scale.tap import TapScale
from tap_scale.testing import ScaleSimulator
from tests import readme
from tests import test_pipelines as pipelines

if t.TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

Json = dict[str, t.Any]
Query = pipelines.Query

# The fixtures of the other end-to-end tests: Meltano installed, a PostgreSQL database and a
# Meltano system database (which keeps the state between runs) of the test's own.
meltano = pipelines.meltano
postgres_database = pipelines.postgres_database
system_database = pipelines.system_database

SELECTED = json.dumps(["tasks.*", "task_messages.*", "task_annotations.*", "task_preferences.*"])
SECTION = "Querying RLHF data"
# An entity of the README's Mermaid diagram: its name, and the lines of its attributes.
ENTITY = r"^    (\w+) \{\n(.*?)^    \}"


def section_blocks(language: str) -> list[readme.Block]:
    """The README's blocks of one language in the section on RLHF data."""
    return [
        block for block in readme.blocks() if block.language == language and SECTION in block.path
    ]


def readme_queries() -> dict[str, str]:
    """The README's RLHF queries, by the heading above each."""
    return {block.heading: block.text for block in section_blocks("sql")}


QUERIES = readme_queries()
# One line of the README that keeps only the current version of a reworked task's rows.
CURRENT = "JOIN scale.tasks t ON t.task_id = a.task_id AND t.completed_at = a.completed_at"


@pytest.fixture
def scale() -> Iterator[ScaleSimulator]:
    """A simulated account large enough for prompts that several raters saw."""
    with ScaleSimulator(seed=0, tasks_per_project=40) as simulator:
        yield simulator


def sync_rework_and_sync_again(
    meltano: Path, scale: ScaleSimulator, loader: str, system_database: str, **settings: str
) -> list[str]:
    """Two runs; between them, tasks are reworked and completed. Returns the reworked ids."""
    settings = {**settings, "TAP_SCALE__SELECT": SELECTED}
    pipelines.meltano_run(meltano, loader, scale, system_database, **settings)
    project = scale.projects[0]["id"]  # the preference project: rankings and ratings
    reworked = [task["task_id"] for task in scale.tasks(project_id=project, status="completed")[:3]]
    scale.rework_tasks(project, reworked)
    scale.complete_tasks(project, 2)
    pipelines.meltano_run(meltano, loader, scale, system_database, **settings)
    return reworked


def assert_the_queries_tell_the_truth(scale: ScaleSimulator, query: Query) -> None:
    tasks = scale.tasks(status="completed")
    truth = Truth(tasks)

    # Old rows of the reworked tasks are still there; the README's filter leaves them out.
    total = query("SELECT count(*) FROM scale.task_annotations", ())[0][0]
    current = f"SELECT count(*) FROM scale.task_annotations a {CURRENT}"  # noqa: S608
    assert total > truth.annotations
    assert query(current, ())[0][0] == truth.annotations
    assert CURRENT in QUERIES["Mean rating per model and criterion"]

    means = rows_by_key(query(QUERIES["Mean rating per model and criterion"], ()), 3)
    assert_close(means, truth.mean_ratings())
    wins = rows_by_key(query(QUERIES["Win rate"], ()), 3)
    assert_close(wins, truth.win_rates())
    spreads = rows_by_key(query(QUERIES["Inter-rater spread"], ()), 4)
    assert_close(spreads, truth.spreads())
    flagged = {(row[0], row[1]) for row in query(QUERIES["Flagged content"], ())}
    assert flagged == truth.flagged()
    # The data holds what the queries are about.
    assert means
    assert wins
    assert spreads
    assert flagged


Keyed = dict[tuple[t.Any, ...], tuple[float, ...]]


def rows_by_key(rows: list[tuple[t.Any, ...]], width: int) -> Keyed:
    """Query rows as {their first `width` columns: the rest, as floats}."""
    keyed = {row[:width]: tuple(float(value) for value in row[width:]) for row in rows}
    assert len(keyed) == len(rows), "a group appears twice"
    return keyed


def assert_close(
    got: Keyed,
    expected: Keyed,
) -> None:
    assert got.keys() == expected.keys()
    for key, values in expected.items():
        assert got[key] == pytest.approx(values, abs=1e-9), key


def number(annotation: Json) -> float | None:
    """The number a rater gave, as Scale's types define it."""
    value: t.Any = annotation.get("value")
    kind = annotation.get("type")
    if kind in {"rubric_rating", "rubric_criteria"} and isinstance(value, dict):
        value = value.get("score" if kind == "rubric_rating" else "weight")
    elif kind != "integer":
        return None
    return float(value) if type(value) in {int, float} else None


class Truth:
    """What the README's queries must find, computed from Scale's raw tasks."""

    def __init__(self, tasks: list[Json]) -> None:
        self.tasks = tasks
        self.annotations = sum(1 for _ in self._every_annotation())
        # (task, model, key, criterion, number, prompts of its turn) of every numbered rating
        # on a message or below it.
        self.ratings: list[tuple[str, str | None, str, str | None, float, list[str]]] = []
        for task, turn, message, annotation, criterion in self._on_messages():
            if (value := number(annotation)) is not None:
                prompts = [m["content"]["text"] for m in turn["messages"] if m["role"] == "user"]
                model = (message.get("model_parameters") or {}).get("model")
                self.ratings.append(
                    (task["task_id"], model, annotation["key"], criterion, value, prompts)
                )

    def _every_annotation(self) -> Iterator[Json]:
        for task in self.tasks:
            for thread in task.get("threads") or ():
                yield from thread["annotations"]
                for turn in thread["turns"]:
                    yield from turn["annotations"]
                    for rubric in turn.get("rubrics") or ():
                        for definition in rubric["criteria_definitions"]:
                            yield from definition["annotations"]
        for _, _, _, annotation, _ in self._on_messages():
            yield annotation

    def _on_messages(self) -> Iterator[tuple[Json, Json, Json, Json, str | None]]:
        for task in self.tasks:
            for thread in task.get("threads") or ():
                for turn in thread["turns"]:
                    criteria = {
                        definition["id"]: definition["criterion"]
                        for rubric in turn.get("rubrics") or ()
                        for definition in rubric["criteria_definitions"]
                    }
                    for message in turn["messages"]:
                        parts = [
                            message,
                            *(message["content"].get("chunks") or ()),
                            *(message.get("rubric_evaluations") or ()),
                        ]
                        for part in parts:
                            for annotation in part.get("annotations") or ():
                                yield task, turn, message, annotation, None
                        for evaluation in message.get("rubric_evaluations") or ():
                            for criterion in evaluation["criteria_evaluations"]:
                                text = criteria.get(criterion["criterion_definition_id"])
                                for annotation in criterion["annotations"]:
                                    yield task, turn, message, annotation, text

    def mean_ratings(self) -> Keyed:
        groups: dict[tuple[t.Any, ...], list[float]] = defaultdict(list)
        for _, model, key, criterion, value, _ in self.ratings:
            groups[model, key, criterion].append(value)
        return {group: (sum(v) / len(v), len(v)) for group, v in groups.items()}

    def win_rates(self) -> Keyed:
        duels: dict[tuple[t.Any, ...], list[float]] = defaultdict(list)
        for annotation in self._every_annotation():
            value: t.Any = annotation.get("value")
            if annotation["type"] == "ranked_choices":
                tiers = [[choice] for choice in value]
            elif annotation["type"] == "ranked_groups":
                tiers = value
            else:
                continue
            ranked = [(choice, rank) for rank, tier in enumerate(tiers) for choice in tier]
            for i, (better, better_rank) in enumerate(ranked):
                for worse, worse_rank in ranked[i + 1 :]:
                    tie = better_rank == worse_rank
                    duels[annotation["key"], better, worse].append(0.5 if tie else 1.0)
                    duels[annotation["key"], worse, better].append(0.5 if tie else 0.0)
        return {group: (sum(v) / len(v), len(v)) for group, v in duels.items()}

    def spreads(self) -> Keyed:
        groups: dict[tuple[t.Any, ...], list[tuple[str, float]]] = defaultdict(list)
        for task_id, model, key, criterion, value, prompts in self.ratings:
            for prompt in prompts:
                groups[prompt, model, key, criterion].append((task_id, value))
        spreads: Keyed = {}
        for group, rated in groups.items():
            raters = {task_id for task_id, _ in rated}
            values = [value for _, value in rated]
            if len(raters) > 1:
                low, high = min(values), max(values)
                spreads[group] = (len(raters), low, high, high - low)
        return spreads

    def flagged(self) -> set[tuple[str, str]]:
        flagged = set()
        for task in self.tasks:
            for annotation in Truth([task])._every_annotation():  # noqa: SLF001
                pii = annotation["key"] == "contains_pii" and annotation.get("value") is True
                value = number(annotation) if annotation["type"] == "integer" else None
                unsafe = annotation["key"] == "safety" and value is not None and value <= 2
                if pii or unsafe:
                    flagged.add((task["task_id"], annotation["id"]))
        return flagged


def test_readme_rlhf_queries_in_postgres_tell_the_truth_after_a_rework(
    meltano: Path, scale: ScaleSimulator, postgres_database: str, system_database: str
) -> None:
    sync_rework_and_sync_again(
        meltano,
        scale,
        "target-postgres",
        system_database,
        TARGET_POSTGRES_DATABASE=postgres_database,
    )
    query = pipelines.postgres_query(postgres_database)
    assert_the_queries_tell_the_truth(scale, query)
    # The README's way to find a label in `value_texts`, in PostgreSQL.
    labelled = (
        "SELECT count(*) FROM scale.task_annotations a WHERE 'unsafe_content' = ANY (a.value_texts)"
    )
    assert query(labelled, ())[0][0] > 0


def test_readme_rlhf_queries_in_duckdb_tell_the_truth_after_a_rework(
    meltano: Path, scale: ScaleSimulator, system_database: str, tmp_path: Path
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    sync_rework_and_sync_again(
        meltano, scale, "target-duckdb", system_database, TARGET_DUCKDB_FILEPATH=str(warehouse)
    )
    query = pipelines.duckdb_query(warehouse)
    assert_the_queries_tell_the_truth(scale, query)
    labelled = (
        "SELECT count(*) FROM scale.task_annotations a "
        "WHERE list_contains(CAST(a.value_texts AS VARCHAR[]), 'unsafe_content')"
    )
    assert query(labelled, ())[0][0] > 0


def test_the_readme_holds_the_four_queries_each_on_current_versions() -> None:
    assert list(QUERIES) == [
        "Mean rating per model and criterion",
        "Win rate",
        "Inter-rater spread",
        "Flagged content",
    ]
    current = (
        r"JOIN scale\.tasks t ON t\.task_id = (\w+)\.task_id "
        r"AND t\.completed_at = \1\.completed_at"
    )
    for name, sql in QUERIES.items():
        assert re.search(current, sql), f"{name} does not keep the current version only"


def test_the_readme_diagram_has_every_stream_and_its_primary_key() -> None:
    (diagram,) = (block.text for block in section_blocks("mermaid"))
    entities = {
        name: {
            attribute.split()[1]
            for attribute in body.strip().splitlines()
            if re.search(r"\bPK\b", attribute)
        }
        for name, body in re.findall(ENTITY, diagram, re.MULTILINE | re.DOTALL)
    }
    catalog = TapScale(config={"api_key": "test_x"}).catalog_dict
    assert entities == {
        stream["tap_stream_id"]: set(stream["key_properties"]) for stream in catalog["streams"]
    }
