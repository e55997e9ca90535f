"""The README's shell blocks, and which test runs each one.

A test claims the shell blocks under a README heading (and under every heading nested in it, but
for the title's: those are only the ones before the first section) with
``@pytest.mark.readme("Heading", ...)``, and runs them. ``tests/test_readme.py`` reads every
test module's claims without importing it and fails for a shell block no test claims, so a
command added to the README is run by some test or fails the suite. Where two claims cover a
block, the one on the deeper heading owns it: ``"Usage"`` claims every block under Usage but
those of a subsection another test claims by name.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import typing as t
from dataclasses import dataclass
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]
README = PROJECT_DIR / "README.md"
TESTS = Path(__file__).resolve().parent

# Fence languages that mean "type this into a shell".
SHELL = {"sh", "bash", "shell", "console", "zsh"}
# Claimed by a test that is on its way in another branch: counts as claimed only until that file
# exists, then the test there must claim the heading itself (and this entry goes).
PENDING: dict[str, str] = {}

FENCE = re.compile(r"^(?P<fence>```+|~~~+)\s*(?P<language>[\w+-]*)")
HEADING = re.compile(r"^(?P<level>#{1,6})\s+(?P<text>.+?)\s*#*\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced block of the README."""

    path: tuple[str, ...]  # the headings it is under, outermost first
    line: int  # of its opening fence, counting from 1
    language: str
    text: str

    @property
    def heading(self) -> str:
        """The nearest heading above the block."""
        return self.path[-1]

    def __str__(self) -> str:
        first = self.text.strip().splitlines()[0] if self.text.strip() else ""
        return f"README.md:{self.line} (under {' > '.join(self.path)!r}): {first}"


def blocks(readme: Path = README) -> list[Block]:
    """Every fenced block of the README, in order."""
    found: list[Block] = []
    path: list[tuple[int, str]] = []
    lines = readme.read_text().splitlines()
    number = 0
    while number < len(lines):
        line = lines[number]
        fence = FENCE.match(line)
        heading = HEADING.match(line)
        if fence:
            end = next(
                (i for i in range(number + 1, len(lines)) if lines[i].strip() == fence["fence"]),
                len(lines),
            )
            text = "\n".join(lines[number + 1 : end]) + "\n"
            headings = tuple(name for _, name in path)
            found.append(Block(headings, number + 1, fence["language"].lower(), text))
            number = end + 1
            continue
        if heading:
            level = len(heading["level"])
            path = [(lvl, name) for lvl, name in path if lvl < level]
            path.append((level, plain(heading["text"])))
        number += 1
    return found


def plain(heading: str) -> str:
    """A heading's text without its markdown: ``Backfills with `meltano state` `` -> ``...``."""
    return heading.replace("`", "").replace("*", "").strip()


def shell_blocks(readme: Path = README) -> list[Block]:
    """The README's shell blocks, in order."""
    return [block for block in blocks(readme) if block.language in SHELL]


def claims(tests: Path = TESTS) -> dict[str, list[str]]:
    """Heading -> the tests that claim its blocks, read from every test module's source."""
    found: dict[str, list[str]] = {}
    for module in sorted(tests.glob("test_*.py")):
        tree = ast.parse(module.read_text(), filename=str(module))
        constants = _module_constants(tree)
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            for decorator in node.decorator_list:
                for heading in _claimed_headings(decorator, constants):
                    found.setdefault(heading, []).append(f"{module.name}::{node.name}")
    return found


def owner(block: Block, claimed: t.Collection[str]) -> str | None:
    """The heading whose claim owns a block: the deepest claimed heading of its path.

    The document's title is everyone's outermost heading: a claim on it owns only the blocks
    directly under it, before the first section.
    """
    path = block.path if len(block.path) == 1 else block.path[1:]
    return next((heading for heading in reversed(path) if heading in claimed), None)


def owned_blocks(heading: str, claimed: t.Collection[str]) -> list[Block]:
    """The shell blocks a claim on ``heading`` owns, in README order."""
    return [block for block in shell_blocks() if owner(block, claimed) == heading]


def pending() -> dict[str, str]:
    """The pending claims whose test has not arrived yet."""
    return {heading: test for heading, test in PENDING.items() if not (PROJECT_DIR / test).exists()}


def _module_constants(tree: ast.Module) -> dict[str, tuple[str, ...]]:
    """Module-level names bound to a tuple or list of string literals."""
    constants: dict[str, tuple[str, ...]] = {}
    for node in tree.body:
        target = value = None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign):
            target, value = node.target, node.value
        if isinstance(target, ast.Name) and isinstance(value, (ast.Tuple, ast.List)):
            strings = [e.value for e in value.elts if isinstance(e, ast.Constant)]
            if len(strings) == len(value.elts) and all(isinstance(s, str) for s in strings):
                constants[target.id] = tuple(t.cast("list[str]", strings))
    return constants


def _claimed_headings(decorator: ast.expr, constants: dict[str, tuple[str, ...]]) -> list[str]:
    """The headings of a ``pytest.mark.readme(...)`` decorator (literals or module constants)."""
    if not (
        isinstance(decorator, ast.Call)
        and isinstance(decorator.func, ast.Attribute)
        and decorator.func.attr == "readme"
    ):
        return []
    headings: list[str] = []
    for argument in decorator.args:
        if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
            headings.append(argument.value)
        elif isinstance(argument, ast.Starred) and isinstance(argument.value, ast.Name):
            headings.extend(constants.get(argument.value.id, ()))
        elif isinstance(argument, ast.Name):
            headings.extend(constants.get(argument.id, ()))
    return headings


def run_script(
    script: str, what: object, *, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run README commands as a reader's shell would (stopping at the first failure, traced).

    Fails naming `what` ran, with the output's end, on a non-zero exit or a traceback.
    """
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-x", "-c", script],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    said = f"{what}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-6000:]}"
    assert done.returncode == 0, f"a README command failed (exit {done.returncode}): {said}"
    assert "Traceback" not in done.stdout + done.stderr, f"a traceback: {said}"
    return done


def copy_checkout(destination: Path) -> Path:
    """Copy this checkout's working tree (what a commit of it would hold) to ``destination``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT_DIR,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = PROJECT_DIR / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination
