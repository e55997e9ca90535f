"""What a task holds, generated from its seed: metadata, threads of turns and messages, errors.

Each project has a kind of work, and each kind its own annotation taxonomy; together the three
kinds cover every annotation type and every part of the Thread/Turn/Message model:

- `preference` (RLHF ranking): two model responses per turn rated 1-5 per criterion, a 1-7
  Likert preference, rankings and tiers;
- `conversation` (SFT): multi-turn chats with system and function messages, attachments,
  reference texts, reasoning, annotated chunks, labeled spans, files and code workspaces;
- `rubric`: turns with rubrics (criteria definitions) and messages with rubric evaluations.

Integer ratings are drawn around a per-model mean, so averaging them per `source_id` (or per
`model_parameters.model`) tells the models apart, as a real report would.
"""

from __future__ import annotations

import typing as t
from functools import lru_cache

from tap_scale.testing.annotations import Annotator
from tap_scale.testing.files import audio_file, basic_file, image_file
from tap_scale.testing.seeds import chance, pick, seeded
from tap_scale.testing.texts import Writer
from tap_scale.testing.timestamps import MICROS_PER_SECOND, format_timestamp

if t.TYPE_CHECKING:
    import random

JsonObject = dict[str, t.Any]

KINDS = ("preference", "conversation", "rubric")

# source_id -> model name, per kind of project; a project's `models` lists these names.
MODELS: dict[str, dict[str, str]] = {
    "preference": {"base_model": "scale-gpt-1.5-turbo", "test_model": "scale-gpt-2.0"},
    "conversation": {"sft_model": "scale-chat-7b-sft"},
    "rubric": {"model_a": "scale-gpt-2.0", "model_b": "scale-reasoner-1"},
}

# The mean 1-5 rating each model earns, so that per-model averages differ.
QUALITY = {"base_model": 3.0, "test_model": 3.7, "sft_model": 3.4, "model_a": 3.2, "model_b": 3.8}

ERROR_TYPES = {
    "UNSUPPORTED_LANGUAGE": "The specified language or locale is not supported",
    "LANGUAGE_MISMATCH": "The prompt language does not match the project's language",
    "PROMPT_LENGTH_EXCEEDED": "The prompt is longer than the model's context window",
    "INVALID_CATEGORY": "The task's category is not one of the project's categories",
    "PROMPT_INFEASIBLE": "The prompt cannot be answered as written",
}
REPORT_TYPES = {
    "violence": "The prompt in the task promotes violence.",
    "self_harm": "The conversation discusses self-harm.",
    "personal_data": "The attachment contains a person's contact details.",
}
_RATINGS = ("instruction_following", "truthfulness", "conciseness", "format", "safety")
_ISSUES = ("hallucination", "verbosity", "formatting", "refusal", "unsafe_content")
_SPAN_LABELS = ("claim", "opinion", "instruction")
_CRITERIA = (
    ("States the central fact correctly", "accuracy"),
    ("Gives at least one concrete example", "helpfulness"),
    ("Makes no claim it cannot support", "honesty"),
    ("Stays under 200 words", "format"),
    ("Answers in the language of the prompt", "instruction_following"),
    ("Names a source the reader can check", "grounding"),
)
_VERDICTS = ("pass", "borderline", "fail")
_POOR = 2  # a 1-5 rating at or below this is a poor one, which raters justify or rewrite
# Share of completed tasks an auditor also annotates, with every type at every level.
_AUDIT_SHARE = 0.03
_AUDIT_SEED = 0x6175646974
# Shares of user messages with an image, an audio clip or an inline text file attached.
_IMAGE_SHARE, _AUDIO_SHARE, _TEXT_FILE_SHARE = 0.15, 0.07, 0.08


def rating(rng: random.Random, source_id: str, scale: tuple[int, int] = (1, 5)) -> int:
    """An integer score on `scale`, drawn around the model's quality."""
    low, high = scale
    mean = low + (QUALITY.get(source_id, 3.0) - 1) / 4 * (high - low)
    return max(low, min(high, round(rng.gauss(mean, (high - low) / 5))))


def task_metadata(seed: int) -> JsonObject:
    """The customer's metadata object of a task."""
    rng = seeded(seed ^ 0x6D657461)
    metadata: JsonObject = {
        "external_id": f"ext-{rng.getrandbits(32):08x}",
        "source": pick(rng, ("web_form", "api", "csv_upload")),
        "locale": pick(rng, ("en_US", "en_GB", "fr_FR", "es_ES", "ja_JP")),
        "tags": rng.sample(("math", "coding", "writing", "safety", "science", "history"), 2),
    }
    if chance(rng, 0.4):
        metadata["review"] = {"tier": pick(rng, ("gold", "standard")), "reviewers": 2}
    return metadata


def task_errors(seed: int) -> list[JsonObject]:
    """The ErrorDetails of a task in status `error`."""
    rng = seeded(seed ^ 0x657272)
    kinds = rng.sample(sorted(ERROR_TYPES), pick(rng, (1, 1, 1, 2)))
    return [{"type": kind, "message": ERROR_TYPES[kind]} for kind in kinds]


def task_reports(seed: int) -> list[JsonObject]:
    """The sensitive content reports of a reported task."""
    rng = seeded(seed ^ 0x726570)
    kind = pick(rng, sorted(REPORT_TYPES))
    return [{"type": kind, "message": REPORT_TYPES[kind]}]


# Tests sync the same few hundred tasks again and again; generating them once halves the cost
# of a page. About 35 KB each, so the cache stays small (a large world is mostly uncached).
# Callers must not mutate what this returns (the renderer copies it).
@lru_cache(maxsize=1024)
def task_threads(kind: str, seed: int, completed_at: int) -> list[JsonObject]:
    """The threads of a completed task, in full form (every opt included)."""
    threads = _Task(seed, completed_at).threads(kind)
    audit(threads, seed)
    return threads


def audit(threads: list[JsonObject], seed: int) -> None:
    """An auditor's pass over some tasks: every annotation type, at every level the task has.

    Scale's models allow any of the twelve annotation types wherever annotations sit (thread,
    turn, message, a content chunk, a rubric evaluation, a criterion evaluation, a criterion
    definition); this puts each type at each of those levels somewhere in a world. Drawn from a
    Random of its own, so the rest of every task is as it would be without it.
    """
    rng = seeded(seed ^ _AUDIT_SEED)
    if not chance(rng, _AUDIT_SHARE):
        return
    annotate = Annotator(rng, Writer(rng))
    for holder in _audited(threads):
        holder["annotations"] = [*holder.get("annotations", []), *annotate.every_type("audit")]


def _audited(threads: list[JsonObject]) -> list[JsonObject]:
    """The first thing of each level in the threads that can hold annotations."""
    turn = threads[0]["turns"][0]
    messages = [m for t in threads[0]["turns"] for m in t["messages"]]
    answer = next(m for m in messages if m["role"] == "assistant")
    content = answer["content"]
    if not content.get("chunks"):
        # The auditor marks the answer's opening as a chunk of its own to annotate it.
        content["chunks"] = [
            {"type": "text", "text": content["text"].split(". ")[0], "annotations": []}
        ]
    holders = [threads[0], turn, answer, content["chunks"][0]]
    evaluations = [e for m in messages for e in m.get("rubric_evaluations", ())]
    if evaluations:
        holders += [evaluations[0], evaluations[0]["criteria_evaluations"][0]]
    definitions = [
        d
        for t in threads[0]["turns"]
        for r in t.get("rubrics", ())
        for d in r["criteria_definitions"]
    ]
    if definitions:
        holders.append(definitions[0])
    return holders


class _Task:
    def __init__(self, seed: int, completed_at: int) -> None:
        self.rng = seeded(seed)
        self.writer = Writer(self.rng)
        self.annotate = Annotator(self.rng, self.writer)
        self.completed_at = completed_at

    def threads(self, kind: str) -> list[JsonObject]:
        count = pick(self.rng, (1, 1, 1, 2)) if kind == "conversation" else 1
        return [self.thread(kind, number) for number in range(count)]

    def thread(self, kind: str, number: int) -> JsonObject:
        if kind == "preference":
            turns = [self.preference_turn(n) for n in range(self.rng.randint(1, 3))]
            annotations = self.preference_thread_annotations()
        elif kind == "conversation":
            turns = [self.conversation_turn(n) for n in range(self.rng.randint(2, 4))]
            annotations = self.conversation_thread_annotations()
        else:
            turns = [self.rubric_turn(n) for n in range(self.rng.randint(1, 2))]
            preferred = pick(self.rng, sorted(MODELS["rubric"]))
            choices = sorted(MODELS["rubric"])
            annotations = [
                self.annotate.category("preferred_model", "Preferred", preferred, choices)
            ]
        return {
            "id": f"thread_{number}",
            "turns": turns,
            "annotations": annotations,
            "submissions": self.submissions(),
        }

    def submissions(self) -> list[JsonObject]:
        # An attempt, then sometimes a reviewer's resubmission, both before completion.
        count = pick(self.rng, (1, 1, 2))
        return [
            {
                "submitted_at": format_timestamp(
                    self.completed_at - self.rng.randint(60, 6 * 3600) * MICROS_PER_SECOND
                ),
                "contributor_id": f"contributor_{self.rng.getrandbits(48):012x}",
            }
            for _ in range(count)
        ]

    def message(self, role: str, text: str, source_id: str) -> JsonObject:
        # Scale's Message model requires `annotations` on every message, system ones included.
        return {"role": role, "content": {"text": text}, "source_id": source_id, "annotations": []}

    def assistant(self, source_id: str, models: dict[str, str], text: str) -> JsonObject:
        message = self.message("assistant", text, source_id)
        parameters: JsonObject = {
            "model": models[source_id],
            "temperature": pick(self.rng, (0.2, 0.7, 0.9, 1.0)),
            "max_completion_tokens": pick(self.rng, (1024, 2048, 4096)),
        }
        if chance(self.rng, 0.5):
            parameters |= {"top_p": 0.9, "top_k": pick(self.rng, (4, 40))}
        message["model_parameters"] = parameters
        message["annotations"] = []
        if chance(self.rng, 0.5):
            # Not in any published model: stands for a field Scale adds to messages later.
            message["safety_tier"] = pick(self.rng, ("low", "low", "medium"))
        return message

    def user(self) -> JsonObject:
        message = self.message("user", self.writer.prompt(), "user")
        content = message["content"]
        draw = self.rng.random()
        if draw < _IMAGE_SHARE:
            content["attachments"] = [image_file(self.rng, f"figure_{self.rng.randint(1, 9)}.png")]
        elif draw < _IMAGE_SHARE + _AUDIO_SHARE:
            content["attachments"] = [audio_file(self.rng, self.writer.prompt())]
        elif draw < _IMAGE_SHARE + _AUDIO_SHARE + _TEXT_FILE_SHARE:
            content["attachments"] = [basic_file(self.rng, "context.txt", self.writer.paragraph())]
        if chance(self.rng, 0.2):
            content["reference_texts"] = [
                {
                    "content": self.writer.paragraph((1, 2)),
                    "category": pick(self.rng, ("source", "style_guide", "gold_answer")),
                    "url": f"https://docs.example.com/ref/{self.rng.getrandbits(32):08x}",
                }
            ]
        message["annotations"] = []
        return message

    def preference_turn(self, number: int) -> JsonObject:
        models = MODELS["preference"]
        responses = [self.assistant(source, models, self.writer.paragraph()) for source in models]
        overall: dict[str, int] = {}
        for response in responses:
            source = response["source_id"]
            scores = {key: rating(self.rng, source) for key in _RATINGS}
            response["annotations"] = [
                self.annotate.integer(key, key.replace("_", " ").capitalize(), score)
                for key, score in scores.items()
            ]
            if scores["truthfulness"] <= _POOR:
                response["annotations"].append(
                    self.annotate.text("truthfulness_justification", "Why", self.writer.comment())
                )
            overall[source] = rating(self.rng, source, (1, 7))
            response["annotations"].append(
                self.annotate.integer("overall", "Overall", overall[source], scale=(1, 7))
            )
            if source == "test_model" and chance(self.rng, 0.4):
                response["content"]["reasoning"] = [{"content": self.writer.paragraph((1, 3))}]
        preferred = max(sorted(overall), key=lambda source: overall[source])
        likert = max(1, min(7, 4 + overall["base_model"] - overall["test_model"]))
        annotations = [
            self.annotate.category(
                "selected_model_id", "Preferred response", preferred, list(models)
            ),
            self.annotate.integer("likert_value", "Preference", likert, scale=(1, 7)),
            self.annotate.text("justification", "Justification", self.writer.comment()),
            self.annotate.boolean("contains_pii", "Contains PII", value=chance(self.rng, 0.05)),
        ]
        return {
            "id": f"turn_{number}",
            "messages": [self.user(), *responses],
            "annotations": annotations,
        }

    def preference_thread_annotations(self) -> list[JsonObject]:
        sources = list(MODELS["preference"])
        self.rng.shuffle(sources)
        tiers = [sources] if chance(self.rng, 0.3) else [[source] for source in sources]
        issues = self.rng.sample(_ISSUES, self.rng.randint(0, 2))
        return [
            self.annotate.ranked_choices("overall_ranking", "Rank the responses", sources),
            self.annotate.ranked_groups("response_tiers", "Group responses by quality", tiers),
            self.annotate.category_multiple("issues_found", "Issues found", issues, _ISSUES),
        ]

    def conversation_turn(self, number: int) -> JsonObject:
        models = MODELS["conversation"]
        messages = (
            [self.message("system", self.writer.system_prompt(), "system")] if number == 0 else []
        )
        messages.append(self.user())
        if chance(self.rng, 0.3):
            messages.append(self.assistant("sft_model", models, "Let me look that up."))
            tool_output = f'{{"results": ["{self.writer.sentence()}"], "count": 1}}'
            messages.append(self.message("function", tool_output, "tool:web_search"))
            messages[-1]["annotations"] = []
        answer = self.assistant("sft_model", models, self.writer.paragraph((3, 6)))
        self.annotate_answer(answer)
        messages.append(answer)
        quality = rating(self.rng, "sft_model")
        annotations = [
            self.annotate.integer("response_quality", "Response quality", quality),
            self.annotate.boolean("is_factual", "Factually correct", value=quality > _POOR),
        ]
        if quality <= _POOR:
            annotations.append(
                self.annotate.text("rewrite", "Rewritten response", self.writer.paragraph())
            )
        if chance(self.rng, 0.25):
            passed = chance(self.rng, 0.7)
            annotations.append(self.annotate.workspace_container("code_execution", passed=passed))
        return {"id": f"turn_{number}", "messages": messages, "annotations": annotations}

    def annotate_answer(self, answer: JsonObject) -> None:
        content = answer["content"]
        if chance(self.rng, 0.4):
            content["reasoning"] = [{"content": self.writer.sentence()} for _ in range(2)]
        spans = [(pick(self.rng, _SPAN_LABELS), self.writer.sentence()) for _ in range(2)]
        answer["annotations"] = [
            self.annotate.integer("helpfulness", "Helpfulness", rating(self.rng, "sft_model")),
            self.annotate.labeled_text("span_labels", "Label the spans", spans, _SPAN_LABELS),
        ]
        if chance(self.rng, 0.5):
            content["chunks"] = [
                {
                    "type": "text",
                    "text": text,
                    "annotations": [
                        self.annotate.labeled_text(
                            "chunk_label", "Chunk", [(label, text)], _SPAN_LABELS
                        )
                    ],
                }
                for label, text in spans
            ]

    def conversation_thread_annotations(self) -> list[JsonObject]:
        return [
            self.annotate.file(
                "reference_file", "Reference material", several=chance(self.rng, 0.5)
            ),
            self.annotate.boolean("conversation_complete", "Complete", value=chance(self.rng, 0.9)),
            self.annotate.category(
                "language",
                "Language",
                pick(self.rng, ("en", "fr", "es", "ja")),
                ("en", "fr", "es", "ja"),
            ),
        ]

    def rubric_turn(self, number: int) -> JsonObject:
        models = MODELS["rubric"]
        criteria = self.rng.sample(_CRITERIA, self.rng.randint(3, 5))
        definitions: list[JsonObject] = []
        for index, (criterion, category) in enumerate(criteria):
            weight = self.rng.randint(1, 5)
            definitions.append(
                {
                    "id": f"criterion_{index}",
                    "criterion": criterion,
                    "weight": weight,
                    "annotations": [
                        self.annotate.rubric_criteria("criterion", criterion, weight, category)
                    ],
                }
            )
        max_total = sum(definition["weight"] for definition in definitions)
        responses = [self.assistant(source, models, self.writer.paragraph()) for source in models]
        for response in responses:
            self.evaluate(response, definitions, max_total)
        return {
            "id": f"turn_{number}",
            "messages": [self.user(), *responses],
            "annotations": [],
            "rubrics": [{"criteria_definitions": definitions, "max_total_score": max_total}],
        }

    def evaluate(self, response: JsonObject, definitions: list[JsonObject], max_total: int) -> None:
        source = response["source_id"]
        evaluations = []
        for definition in definitions:
            weight = definition["weight"]
            # A model's 1-5 quality, turned into a share of the criterion's weight.
            score = round(weight * (rating(self.rng, source) - 1) / 4)
            evaluations.append(
                {
                    "criterion_definition_id": definition["id"],
                    "score": score,
                    "annotations": [self.annotate.rubric_rating("rating", score, weight)],
                }
            )
        total = sum(evaluation["score"] for evaluation in evaluations)
        response["rubric_evaluations"] = [
            {
                "criteria_evaluations": evaluations,
                "annotations": [self.annotate.text("summary", "Summary", self.writer.comment())],
                "total_score": total,
                "percentage": round(100 * total / max_total, 1),
            }
        ]
        verdict = _VERDICTS[0 if total * 3 >= max_total * 2 else 1 if total * 3 >= max_total else 2]
        response["annotations"] = [
            self.annotate.integer(
                "overall_score", "Overall", rating(self.rng, source, (1, 10)), scale=(1, 10)
            ),
            self.annotate.category("verdict", "Verdict", verdict, _VERDICTS),
        ]
