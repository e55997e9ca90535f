"""The README, executed: every shell block is run by some test, most of them here.

The Usage sections are run as a reader would run them, in one scratch directory, top to bottom:
the quickstart's ``pip install`` and ``git clone`` make a scratch Meltano project (with its own
system database, ``.meltano/meltano.db`` of the clone), and every later command runs in it, against
the simulated Scale API and a database of its own on the local PostgreSQL. A shell block added
under Usage is run here with no change to this file; one added elsewhere must be claimed by a test
(``@pytest.mark.readme("Heading")``, see ``tests/readme.py``), or
``test_every_shell_block_is_claimed`` fails.

Only what cannot be real here is substituted, each in one place below:

- the API key ``live_...`` becomes the simulator's key (text), and the API URL is the simulator's:
  ``TAP_SCALE_API_URL`` in the environment (Meltano and ``--config ENV``), ``"api_url"`` added to
  the plain tap's ``config.json`` (text);
- PostgreSQL is the local server, in a database of the test's own: ``TARGET_POSTGRES_HOST``,
  ``_USER`` and ``_DATABASE`` in the environment, which Meltano ranks above the values the README's
  ``meltano config set`` lines store (those lines still run);
- the repository's address (GitHub, and its raw files) becomes a snapshot of this checkout's
  working tree, committed to a scratch git repository, also in the snapshot's Hub definition;
- ``pip`` is uv's pip, into a virtualenv of the test's own (Meltano's sections share one, the
  plain tap has another): the same installs from uv's cache, in seconds. Meltano
  installs plugins with uv too (``MELTANO_VENV_BACKEND=uv``, as this repository's meltano.yml
  sets) and sends no usage statistics.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import typing as t
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pytest
import yaml

from tap_scale.models import parse_timestamp
from tap_scale.testing import ScaleSimulator
from tests import postgres, readme

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator

PROJECT_DIR = readme.PROJECT_DIR
CLAIMS = readme.claims()

# The sections a reader follows in one terminal; the sections' own claims are deeper headings.
USAGE = ("Usage",)
# Where a section's commands start: in the clone the quickstart makes, unless named here.
STARTS_AT = {
    "With Meltano: quickstart": "",  # the scratch directory: it clones into ./tap-scale
    "In a Meltano project of your own": "own-project",
}
CLONE = "tap-scale"
# Which virtualenv a section's `pip` installs into, and whose commands it puts on PATH.
VIRTUALENVS = {"As a plain Singer tap": "singer-venv"}
MELTANO_VIRTUALENV = "meltano-venv"

REPOSITORY = "https://github.com/tap-scale/tap-scale.git"
RAW_FILES = "https://raw.githubusercontent.com/tap-scale/tap-scale/main/"
PROJECT = "RLHF Preference Ranking"  # the project the README's examples name
FLAT = "scale_flat"  # the schema the stream maps section loads flattened tables into


QUICKSTART = "With Meltano: quickstart"
# Sections that need the quickstart's Meltano and clone but nothing of the sections after it: they
# run in a second thread beside those (the machine has two cores), and their tests come last.
BESIDE = ("In a Meltano project of your own", "As a plain Singer tap")


def usage_sections() -> list[str]:
    """The headings under Usage whose shell blocks this module runs, in README order."""
    claimed = [*CLAIMS, *readme.pending()]
    sections: list[str] = []
    for block in readme.owned_blocks("Usage", claimed):
        if block.heading not in sections:
            sections.append(block.heading)
    return sections


def in_test_order(sections: list[str]) -> list[str]:
    """The sections in README order, but those run beside the others last."""
    return [s for s in sections if s not in BESIDE] + [s for s in sections if s in BESIDE]


# --- What is substituted, and the scratch directory a reader works in


@dataclass
class Section:
    """What one section's shell blocks printed."""

    runs: list[subprocess.CompletedProcess[str]] = field(default_factory=list)

    @property
    def stdout(self) -> str:
        """Everything the section printed on stdout."""
        return "".join(run.stdout for run in self.runs)


class Reader:
    """A reader following the Usage sections in one scratch directory, top to bottom."""

    def __init__(self, root: Path, simulator: ScaleSimulator, database: str) -> None:
        self.root = root
        self.simulator = simulator
        self.database = database
        self.sections: dict[str, Future[Section]] = {}
        self.beside = ThreadPoolExecutor(max_workers=1)
        self.uv = _uv()
        self.snapshot = self._snapshot_of_the_checkout()
        self.substitutions = {
            "live_...": simulator.api_key,
            '{"api_key": ': f'{{"api_url": "{simulator.url}", "api_key": ',
            f"git+{REPOSITORY}": str(self.snapshot),
            REPOSITORY: str(self.snapshot),
            RAW_FILES: f"{self.snapshot}/",
        }

    @property
    def clone(self) -> Path:
        """The Meltano project the quickstart clones."""
        return self.root / CLONE

    def section(self, heading: str) -> Section:
        """Run the Usage sections this one needs (once each), and return what this one printed."""
        order = usage_sections()
        needed = [QUICKSTART] if heading in BESIDE else order[: order.index(heading)]
        for earlier in (e for e in needed if e not in BESIDE):
            if self._started(earlier).exception():
                pytest.fail(f"a section this one needs failed: {earlier!r}")
        return self._started(heading).result(timeout=900)

    def _started(self, heading: str) -> Future[Section]:
        """A section's run: started now, unless it was before (or is running beside)."""
        if heading not in self.sections:
            self.sections[heading] = self._run_now(heading)
            if heading == QUICKSTART and not self.sections[heading].exception():
                for beside in (b for b in usage_sections() if b in BESIDE):
                    self.sections[beside] = self.beside.submit(self._run_section, beside)
        return self.sections[heading]

    def _run_now(self, heading: str) -> Future[Section]:
        done: Future[Section] = Future()
        try:
            done.set_result(self._run_section(heading))
        except (Exception, pytest.fail.Exception) as error:  # noqa: BLE001 - raised by .result()
            done.set_exception(error)
        return done

    def _run_section(self, heading: str) -> Section:
        section = Section()
        start = self.root / STARTS_AT.get(heading, CLONE)
        if heading == "In a Meltano project of your own":
            # The reader's own project: made with the Meltano the quickstart installed.
            self._meltano_init(start)
        venv = self._virtualenv(VIRTUALENVS.get(heading, MELTANO_VIRTUALENV))
        for block in readme.owned_blocks("Usage", [*CLAIMS, *readme.pending()]):
            if block.heading == heading:
                section.runs.append(self._run_block(block, start, venv))
        return section

    def _run_block(
        self, block: readme.Block, cwd: Path, venv: Path
    ) -> subprocess.CompletedProcess[str]:
        # Each command is traced with the time it started (bash takes no PS4 from a root's env).
        script = "PS4='+ [$EPOCHREALTIME] '\n" + block.text
        for text, replacement in self.substitutions.items():
            script = script.replace(text, replacement)
        return readme.run_script(script, block, cwd=cwd, env=self._environment(venv))

    def _environment(self, venv: Path) -> dict[str, str]:
        """The reader's environment: theirs, less any Meltano, tap or target setting, plus ours."""
        # PYTHONDONTWRITEBYTECODE goes too: as on most machines, each module is compiled once,
        # when first imported, rather than by every process (or all at install).
        settings = (
            *("MELTANO_", "TAP_SCALE_", "TARGET_", "VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE"),
            *("UV_COMPILE_BYTECODE", "UV_PROJECT_ENVIRONMENT"),
        )
        inherited = {
            name: value for name, value in os.environ.items() if not name.startswith(settings)
        }
        ours = {PROJECT_DIR / ".venv/bin", PROJECT_DIR / ".meltano-venv/bin"}
        path = [p for p in inherited.get("PATH", "").split(os.pathsep) if Path(p) not in ours]
        return {
            **inherited,
            "PATH": os.pathsep.join([str(venv / "shim"), str(venv / "bin"), *path]),
            "TAP_SCALE_API_URL": self.simulator.url,
            "TARGET_POSTGRES_HOST": postgres.HOST,
            "TARGET_POSTGRES_USER": "postgres",
            "TARGET_POSTGRES_DATABASE": self.database,
            "MELTANO_VENV_BACKEND": "uv",
            "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
            "UV_PYTHON_DOWNLOADS": "never",
        }

    def _virtualenv(self, name: str) -> Path:
        """A virtualenv of the test's own, with a `pip` that is uv's pip into it."""
        venv = self.root / name
        if not venv.exists():
            # On the Python the project runs Meltano on (the Makefile's MELTANO_VENV_PYTHON).
            python = PROJECT_DIR / ".meltano-venv/bin/python"
            subprocess.run(
                [self.uv, "venv", "--quiet", "--python", str(python), str(venv)], check=True
            )
            shim = venv / "shim" / "pip"
            shim.parent.mkdir()
            shim.write_text(f'#!/bin/sh\nexec "{self.uv}" pip "$@" --python "{venv}/bin/python"\n')
            shim.chmod(0o755)
        return venv

    def _meltano_init(self, project: Path) -> None:
        venv = self._virtualenv(MELTANO_VIRTUALENV)
        subprocess.run(
            [venv / "bin/meltano", "init", project.name, "--no-usage-stats"],
            cwd=project.parent,
            env=self._environment(venv),
            capture_output=True,
            check=True,
        )

    def _snapshot_of_the_checkout(self) -> Path:
        """This checkout's working tree (what a commit of it would hold), as a git repository."""
        snapshot = readme.copy_checkout(self.root / "origin" / CLONE)
        # The Hub definition installs from the repository's address: from the snapshot, here.
        hub = snapshot / "hub/tap-scale.yml"
        hub.write_text(hub.read_text().replace(f"git+{REPOSITORY}", str(snapshot)))
        git = ["git", "-c", "user.name=readme", "-c", "user.email=readme@localhost"]
        for command in (["init", "--quiet"], ["add", "--all"], ["commit", "--quiet", "-m", "-"]):
            subprocess.run([*git, *command], cwd=snapshot, check=True)
        return snapshot


def _uv() -> str:
    uv = PROJECT_DIR / ".tools/bin/uv"
    found = str(uv) if uv.exists() else shutil.which("uv")
    if not found or not (PROJECT_DIR / ".meltano-venv/bin/python").exists():
        pytest.skip("uv and .meltano-venv/ are not installed: run the tests with `make test`")
    return found


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reader]:
    """One scratch directory for the whole module: the README read once, top to bottom."""
    with ScaleSimulator() as simulator, postgres.scratch_database() as database:
        reader = Reader(tmp_path_factory.mktemp("readme"), simulator, database)
        yield reader
        reader.beside.shutdown(wait=True)


# --- What each section must have done, beyond running without an error or a traceback


def completed_tasks(simulator: ScaleSimulator, project_name: str = PROJECT) -> set[str]:
    """The ids of a project's completed tasks, by the simulator's truth."""
    project = next(p for p in simulator.projects if p["name"] == project_name)
    return {
        task["task_id"] for task in simulator.tasks(project_id=project["id"], status="completed")
    }


def delivered_tasks(simulator: ScaleSimulator, project_name: str = PROJECT) -> int:
    project = next(p for p in simulator.projects if p["name"] == project_name)
    return sum(len(simulator.delivery_tasks(d["id"])) for d in simulator.deliveries(project["id"]))


def check_quickstart(reader: Reader, section: Section) -> None:
    warehouse = reader.clone / "output/warehouse.duckdb"
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        loaded = {
            row[0] for row in connection.execute("SELECT task_id FROM scale.tasks").fetchall()
        }
    assert loaded == completed_tasks(reader.simulator), "only the named project's tasks, all"
    assert "api_key" in section.stdout  # `meltano config list` listed it...
    assert reader.simulator.api_key not in section.stdout  # ...without showing it


def check_own_project(reader: Reader, section: Section) -> None:
    del section
    project = reader.root / STARTS_AT["In a Meltano project of your own"]
    plugins = yaml.safe_load((project / "meltano.yml").read_text())["plugins"]
    assert [p["name"] for p in plugins["extractors"]] == ["tap-scale"]
    assert "utilities" not in plugins, "`meltano add` took a word of the command for a plugin"
    tap = project / ".meltano/extractors/tap-scale/venv/bin/tap-scale"
    about = subprocess.run([tap, "--about", "--format=json"], capture_output=True, check=True)
    assert json.loads(about.stdout)["name"] == "tap-scale"


def check_postgres(reader: Reader, section: Section) -> None:
    del section
    loaded = postgres.query(reader.database, "SELECT task_id FROM scale.tasks")
    assert {row[0] for row in loaded} == completed_tasks(reader.simulator)


def check_stream_maps(reader: Reader, section: Section) -> None:
    del section
    urls = postgres.query(reader.database, f"SELECT task_id, task_url FROM {FLAT}.tasks")  # noqa: S608
    assert {task_id for task_id, _ in urls} == completed_tasks(reader.simulator)
    assert all(url == f"scale:{task_id}" for task_id, url in urls)
    columns = postgres.query(
        reader.database,
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = 'tasks'",
        (FLAT,),
    )
    assert ("sensitive_content_reports",) not in columns
    assert ("metadata__task_count",) in postgres.query(  # one column per field of an object
        reader.database,
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = 'dataset_deliveries'",
        (FLAT,),
    )


def check_delivered_work(reader: Reader, section: Section) -> None:
    del section
    loaded = postgres.query(reader.database, f"SELECT count(*) FROM {FLAT}.delivery_tasks")  # noqa: S608
    assert loaded == [(delivered_tasks(reader.simulator),)]


def check_backfills(reader: Reader, section: Section) -> None:
    state_id = "dev:tap-scale-to-target-postgres"
    assert state_id in section.stdout.splitlines()  # `meltano state list`
    got = next(line for line in section.stdout.splitlines() if line.startswith("{"))
    assert json.loads(got)["singer_state"]["bookmarks"]  # `meltano state get`
    with contextlib.closing(sqlite3.connect(reader.clone / ".meltano/meltano.db")) as database:
        saved = database.execute("SELECT state_id FROM state").fetchall()
    assert (state_id,) in saved, "the runs after `meltano state clear` saved a state again"


def check_plain_tap(reader: Reader, section: Section) -> None:
    del section
    messages = [
        json.loads(line) for line in (reader.clone / "messages.jsonl").read_text().splitlines()
    ]
    records = {
        m["record"]["task_id"] for m in messages if m["type"] == "RECORD" and m["stream"] == "tasks"
    }
    assert records == completed_tasks(reader.simulator)
    state = json.loads((reader.clone / "state.json").read_text())
    assert state["bookmarks"]["tasks"]
    more = [json.loads(line) for line in (reader.clone / "more.jsonl").read_text().splitlines()]
    assert more[-1]["type"] == "STATE"


def runs_without_error(reader: Reader, section: Section) -> None:
    """A section with no check of its own: that it ran without an error is the check."""
    del reader, section


CHECKS: dict[str, Callable[[Reader, Section], None]] = {
    "With Meltano: quickstart": check_quickstart,
    "In a Meltano project of your own": check_own_project,
    "PostgreSQL": check_postgres,
    "Stream maps and flattening": check_stream_maps,
    "Syncing only delivered work": check_delivered_work,
    "Backfills with meltano state": check_backfills,
    "As a plain Singer tap": check_plain_tap,
}


# --- The tests


@pytest.mark.readme(*USAGE)
@pytest.mark.parametrize("heading", in_test_order(usage_sections()))
def test_usage_section_runs_as_written(reader: Reader, heading: str) -> None:
    section = reader.section(heading)
    assert section.runs
    CHECKS.get(heading, runs_without_error)(reader, section)


@pytest.mark.readme("The simulator")
def test_the_simulator_commands_serve_until_ctrl_c() -> None:
    (block,) = readme.owned_blocks("The simulator", CLAIMS)
    lines = [line.split("#")[0].split() for line in block.text.splitlines() if line.strip()]
    assert len(lines) == 2
    for command in lines:
        # Any free port (the machine is shared) instead of the README's example.
        command[command.index("--port") + 1] = "0"
        with subprocess.Popen(
            command, cwd=PROJECT_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as server:
            assert server.stdout is not None
            printed = dict(pair.split("=", 1) for pair in server.stdout.readline().split())
            headers = {"Authorization": f"Bearer {printed['api_key']}"}
            request = urllib.request.Request(f"{printed['url']}/projects", headers=headers)  # noqa: S310 - the simulator's own loopback URL
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                project = json.load(response)["projects"][0]["id"]
            listing = urllib.request.Request(  # noqa: S310
                f"{printed['url']}/tasks?project_id={project}&status=completed&limit=100",
                headers=headers,
            )
            with urllib.request.urlopen(listing, timeout=10) as response:  # noqa: S310
                tasks = json.load(response)["tasks"]
            created = [parse_timestamp(task["created_at"]) for task in tasks]
            if "newest-first" in command:
                assert created == sorted(created, reverse=True)
            server.send_signal(signal.SIGINT)  # Ctrl-C
            _, stderr = server.communicate(timeout=30)
        assert server.returncode == 0, stderr
        assert "Traceback" not in stderr


@pytest.mark.readme("tap-scale", "Development")
def test_ci_runs_the_make_commands() -> None:
    ci = [
        line.strip()
        for line in (PROJECT_DIR / ".ci/run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    blocks = [
        *readme.owned_blocks("tap-scale", CLAIMS),
        *readme.owned_blocks("Development", CLAIMS),
    ]
    assert blocks
    for block in blocks:
        for command in commands(block):
            # CI may add arguments that make it smaller (`make bench ARGS=...`).
            assert any(line.split()[: len(command.split())] == command.split() for line in ci), (
                f"{block}: `{command}` is not run by .ci/run"
            )


def commands(block: readme.Block) -> list[str]:
    """A block's command lines, without their comments."""
    return [line.split(" #")[0].strip() for line in block.text.splitlines() if line.strip()]


def test_every_shell_block_is_claimed() -> None:
    claimed = [*CLAIMS, *readme.pending()]
    unclaimed = [str(b) for b in readme.shell_blocks() if readme.owner(b, claimed) is None]
    assert not unclaimed, (
        "README shell blocks no test runs: run them in a test marked "
        '@pytest.mark.readme("<their heading>"):\n' + "\n".join(unclaimed)
    )


def test_every_claim_names_a_heading_with_shell_blocks() -> None:
    headings = {heading for block in readme.shell_blocks() for heading in block.path}
    stale = {h: tests for h, tests in CLAIMS.items() if h not in headings}
    assert not stale, f"claims on README headings with no shell block: {stale}"
    arrived = {h: test for h, test in readme.PENDING.items() if h not in readme.pending()}
    assert not arrived, (
        f"{arrived}: the test has arrived; claim its README heading there with "
        "@pytest.mark.readme and remove the entry from tests/readme.py's PENDING"
    )


def test_every_code_block_says_its_language() -> None:
    # A shell block without a language would escape every claim above.
    untagged = [str(block) for block in readme.blocks() if not block.language]
    assert not untagged, "tag these blocks (```sh, or ```text for output):\n" + "\n".join(untagged)


def test_every_substitution_is_needed_by_some_usage_block() -> None:
    texts = [b.text for b in readme.owned_blocks("Usage", [*CLAIMS, *readme.pending()])]
    sample = {"live_...", '{"api_key": ', f"git+{REPOSITORY}", REPOSITORY, RAW_FILES}
    for text in sample:
        assert any(text in block for block in texts), f"nothing in the README to substitute {text}"
    hub = (PROJECT_DIR / "hub/tap-scale.yml").read_text()
    assert f"pip_url: git+{REPOSITORY}" in hub


def test_readme_installs_the_meltano_the_project_locks() -> None:
    locked = re.search(
        r"^meltano==(\S+)", (PROJECT_DIR / "requirements-meltano.txt").read_text(), re.MULTILINE
    )
    installs = [
        match[1]
        for block in readme.shell_blocks()
        for match in re.finditer(r'pip install "meltano==([^"]+)"', block.text)
    ]
    assert locked
    assert installs == [locked[1]]


def test_readme_and_makefile_agree_on_how_long_the_quick_bench_takes() -> None:
    said = [
        re.search(r"ARGS=--quick`? for 10,000 tasks only[^(]*?\(?about ([a-z\s]+)", text)
        for text in (readme.README.read_text(), (PROJECT_DIR / "Makefile").read_text())
    ]
    assert said[0]
    assert said[1]
    assert " ".join(said[0][1].split()) == " ".join(said[1][1].split())
