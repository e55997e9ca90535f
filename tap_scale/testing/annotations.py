"""Scale Annotation objects of every type, in full (`opts=annotation_details`) form.

The renderer cuts them down to `key` and `value` when the client does not ask for details.
Some annotations are marked not applicable or cannot-assess (and then carry no value), and some
carry `rater_confidence`, a field no published model lists, standing for whatever Scale adds next.
"""

from __future__ import annotations

import typing as t

from tap_scale.testing.files import basic_file

if t.TYPE_CHECKING:
    import random
    from collections.abc import Sequence

    from tap_scale.testing.texts import Writer

JsonObject = dict[str, t.Any]

ANNOTATION_TYPES = (
    "integer",
    "boolean",
    "text",
    "category",
    "category_multiple",
    "ranked_choices",
    "ranked_groups",
    "labeled_text",
    "file",
    "rubric_criteria",
    "rubric_rating",
    "workspace_container",
)

_NOT_APPLICABLE_RATE = 0.04
_CANNOT_ASSESS_RATE = 0.04
_CONFIDENCE_RATE = 0.3
_RATING_COLORS = ("red", "orange", "yellow", "green")
_WORKSPACES = "https://workspaces.scale-simulator.test"
# What an auditor's annotations of every type choose among.
_AUDIT_LABELS = ("accurate", "unclear", "off_topic", "unsafe")


class Annotator:
    """Makes the annotations of one task with that task's Random."""

    def __init__(self, rng: random.Random, writer: Writer) -> None:
        """Draw ids, skips and values from this Random; write comments with this writer."""
        self._rng = rng
        self._writer = writer

    def make(  # noqa: PLR0913 - mirrors the Annotation model's optional fields
        self,
        key: str,
        annotation_type: str,
        value: object,
        *,
        title: str,
        description: str | None = None,
        labels: Sequence[str] | None = None,
        possible_values: Sequence[object] | None = None,
        criteria: str | None = None,
        skippable: bool = False,
    ) -> JsonObject:
        """An annotation; a `skippable` one is sometimes not applicable or cannot be assessed."""
        annotation: JsonObject = {
            "id": f"an_{self._rng.getrandbits(48):012x}",
            "key": key,
            "type": annotation_type,
            "title": title,
        }
        if description is not None:
            annotation["description"] = description
        if labels is not None:
            annotation["labels"] = list(labels)
        skip = self._rng.random() if skippable else 1.0
        if skippable:
            annotation["not_applicable"] = skip < _NOT_APPLICABLE_RATE
            annotation["cannot_assess"] = (
                _NOT_APPLICABLE_RATE <= skip < _NOT_APPLICABLE_RATE + _CANNOT_ASSESS_RATE
            )
        annotation["metadata"] = {"criteria": criteria} if criteria else {}
        if skip >= _NOT_APPLICABLE_RATE + _CANNOT_ASSESS_RATE:
            if annotation_type in {"integer", "category", "ranked_choices"}:
                annotation["justification"] = self._writer.comment()
            annotation["value"] = value
        if possible_values is not None:
            annotation["possible_values"] = list(possible_values)
        if self._rng.random() < _CONFIDENCE_RATE:
            annotation["rater_confidence"] = round(self._rng.uniform(0.5, 1.0), 2)
        return annotation

    def integer(
        self, key: str, title: str, value: int, *, scale: tuple[int, int] = (1, 5)
    ) -> JsonObject:
        """A score on an integer scale, e.g. a 1-5 rating or a 1-7 Likert preference."""
        low, high = scale
        return self.make(
            key,
            "integer",
            value,
            title=title,
            description=f"Rate from {low} (worst) to {high} (best).",
            possible_values=range(low, high + 1),
            criteria=f"{low} = fails the criterion, {high} = fully meets it",
            skippable=True,
        )

    def boolean(self, key: str, title: str, *, value: bool) -> JsonObject:
        """A yes/no judgement."""
        return self.make(key, "boolean", value, title=title, possible_values=[True, False])

    def text(self, key: str, title: str, value: str) -> JsonObject:
        """Free text, such as a justification or a rewrite."""
        return self.make(key, "text", value, title=title)

    def category(self, key: str, title: str, value: str, choices: Sequence[str]) -> JsonObject:
        """One choice among labels."""
        return self.make(
            key, "category", value, title=title, labels=choices, possible_values=choices
        )

    def category_multiple(
        self, key: str, title: str, values: Sequence[str], choices: Sequence[str]
    ) -> JsonObject:
        """Any number of choices among labels."""
        return self.make(
            key,
            "category_multiple",
            list(values),
            title=title,
            labels=choices,
            possible_values=choices,
            skippable=True,
        )

    def ranked_choices(self, key: str, title: str, ranking: Sequence[str]) -> JsonObject:
        """Choices in order of preference, best first."""
        # Scale's AnnotationRankedChoices has no `possible_values`: the options are its labels.
        return self.make(key, "ranked_choices", list(ranking), title=title, labels=sorted(ranking))

    def ranked_groups(self, key: str, title: str, groups: Sequence[Sequence[str]]) -> JsonObject:
        """Tiers of choices, best tier first; choices within a tier are tied."""
        return self.make(key, "ranked_groups", [list(group) for group in groups], title=title)

    def labeled_text(
        self, key: str, title: str, spans: Sequence[tuple[str, str]], labels: Sequence[str]
    ) -> JsonObject:
        """Spans of text, each with a label."""
        value = [{"label": label, "text": text} for label, text in spans]
        return self.make(key, "labeled_text", value, title=title, labels=labels)

    def file(self, key: str, title: str, *, several: bool) -> JsonObject:
        """A file (or a list of files) a rater attached."""
        files = [
            basic_file(self._rng, f"notes_{n}.txt", self._writer.comment())
            for n in range(2 if several else 1)
        ]
        return self.make(key, "file", files if several else files[0], title=title)

    def rubric_criteria(self, key: str, criterion: str, weight: int, category: str) -> JsonObject:
        """How one rubric criterion is defined and weighted."""
        value = {"weight": weight, "criterion": criterion, "category": category}
        return self.make(key, "rubric_criteria", value, title="Criterion definition")

    def rubric_rating(self, key: str, score: int, max_score: int) -> JsonObject:
        """How a response scored on one rubric criterion."""
        color = _RATING_COLORS[
            min(len(_RATING_COLORS) - 1, score * len(_RATING_COLORS) // max(1, max_score))
        ]
        value = {"score": score, "color": color, "justification": self._writer.comment()}
        return self.make(key, "rubric_rating", value, title="Criterion rating")

    def workspace_container(self, key: str, *, passed: bool) -> JsonObject:
        """A code workspace a rater ran the response in, with its last run's output.

        Shaped as Scale's WorkspaceContainerValue: the config carries every field the model
        requires, files are WorkspaceFiles, and each output stream is a ContentAndUrl object.
        """
        workspace_id = f"ws_{self._rng.getrandbits(48):012x}"
        workspace_url = f"{_WORKSPACES}/{workspace_id}"
        value = {
            "workspace_id": workspace_id,
            "workspace_config": {
                "workspace_id": workspace_id,
                "workspace_url": workspace_url,
                "workspace_token": f"wst_{self._rng.getrandbits(96):024x}",
                "expires_at": f"2025-03-{self._rng.randint(1, 28):02d}T00:00:00Z",
                "inactivity_freeze_time": 1800,
                "workspace_image_version": 3,
            },
            # Free-form in the model; shaped as Scale's WorkspaceExecutionData.
            "last_code_run_event": {
                "id": f"run_{self._rng.getrandbits(48):012x}",
                "result": {
                    "status": {"code": 0, "name": "Accepted"}
                    if passed
                    else {"code": 1, "name": "Wrong Answer"},
                    "time": round(self._rng.uniform(0.08, 9.0), 3),
                    "score": 1.0 if passed else round(self._rng.uniform(0.0, 0.7), 2),
                },
            },
            "output_files": [
                {
                    "file_name": "result.txt",
                    "scale_url": f"{workspace_url}/files/result.txt",
                    "url": f"{workspace_url}/files/result.txt?download=1",
                    "file_language": "plaintext",
                    "file_content": "ok" if passed else "failed",
                }
            ],
            "stdout_output": self._output(
                workspace_url, "stdout", "3 passed" if passed else "1 failed, 2 passed"
            ),
            "stderr_output": self._output(
                workspace_url, "stderr", "" if passed else "AssertionError: expected 42, got 41"
            ),
            "test_stdout_output": self._output(workspace_url, "test_stdout", "collected 3 items"),
            "test_stderr_output": self._output(workspace_url, "test_stderr", ""),
        }
        return self.make(key, "workspace_container", value, title="Code execution")

    def every_type(self, prefix: str) -> list[JsonObject]:
        """One annotation of each of Scale's twelve types (`ANNOTATION_TYPES`, in order).

        Scale's models allow any type wherever annotations sit; an auditor's checklist asks one
        question of each type, at whichever level it audits.
        """
        rng, writer = self._rng, self._writer
        labels = list(_AUDIT_LABELS)
        rng.shuffle(labels)
        score = rng.randint(1, 5)
        return [
            self.integer(f"{prefix}_score", "Audit score", score),
            self.boolean(f"{prefix}_passed", "Audit passed", value=score > 2),  # noqa: PLR2004
            self.text(f"{prefix}_note", "Audit note", writer.comment()),
            self.category(f"{prefix}_verdict", "Audit verdict", labels[0], _AUDIT_LABELS),
            self.category_multiple(f"{prefix}_issues", "Audit issues", labels[:2], _AUDIT_LABELS),
            self.ranked_choices(f"{prefix}_ranking", "Audit ranking", labels),
            self.ranked_groups(f"{prefix}_tiers", "Audit tiers", [labels[:2], labels[2:]]),
            self.labeled_text(
                f"{prefix}_spans", "Audit spans", [(labels[0], writer.sentence())], _AUDIT_LABELS
            ),
            self.file(f"{prefix}_evidence", "Audit evidence", several=rng.random() < 0.5),  # noqa: PLR2004
            self.rubric_criteria(f"{prefix}_criterion", "Passes the audit", 2, "audit"),
            self.rubric_rating(f"{prefix}_rating", min(score, 4), 4),
            self.workspace_container(f"{prefix}_workspace", passed=score > 2),  # noqa: PLR2004
        ]

    @staticmethod
    def _output(workspace_url: str, stream: str, content: str) -> JsonObject:
        """One output stream of a workspace run, as Scale's ContentAndUrl."""
        url = f"{workspace_url}/logs/{stream}.txt"
        return {"content": content, "url": url, "scale_url": url}
