"""Reviewed labels coming back: Label Studio's JSON export or the review CSV, checked, as training rows.

Both formats name each image by `image_id` and `image_uri`, the columns `jobs.review export` puts in
every task's `data` and in its CSV (a URL that expires cannot identify an image). Rows nobody
answered (a task without annotations, a cancelled annotation, an empty `label` cell) are skipped.

Everything wrong is collected and reported at once, naming the rows, before training starts:
an unknown class, an image answered twice (the same answer: duplicate; another answer: conflicting),
an image that no longer exists at its URI, and an image that the training catalog already holds.
An image of the catalog's validation or test split is **refused**, not quietly dropped: relabelling
it would move the yardstick that before/after comparisons use, and a silent drop would hide that the
reviewer's work was not used.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd

from pipeline import storage
from pipeline.schema import IMAGE_ID, IMAGE_URI, LABEL
from pipeline.splits import SPLIT

logger = logging.getLogger(__name__)

# How many offending rows a message names before it says "and N more".
SHOWN_PROBLEMS = 20


@dataclass(frozen=True)
class ExtraLabels:
    """Reviewed images ready to join the train split, and what the model card records of them."""

    source_uri: str
    sha256: str
    rows: pd.DataFrame  # image_id, image_uri, label; one row per image

    def card_entry(self) -> dict[str, Any]:
        counts = self.rows[LABEL].value_counts().sort_index()
        return {
            "source": self.source_uri,
            "count": len(self.rows),
            "sha256": self.sha256,
            "per_class": {str(label): int(count) for label, count in counts.items()},
            "split": "train only; the catalog's own split is unchanged",
        }


@dataclass(frozen=True)
class Answer:
    """One person's answer about one image, and where in the file it came from."""

    where: str  # "task 12" or "row 5", for messages
    image_id: str
    image_uri: str
    label: str


def read_extra_labels(uri: str, class_names: tuple[str, ...], catalog: pd.DataFrame) -> ExtraLabels:
    """Reads, checks and de-duplicates reviewed labels.

    Args:
        uri: Label Studio's JSON export (`.json`) or the review CSV (`.csv`), local or s3://.
        class_names: The training catalog's classes; an answer outside them is refused.
        catalog: The training catalog with its split, to refuse images it already holds.

    Raises:
        ValueError: The file is missing or malformed, or rows are wrong, every such row named.
    """
    uri = storage.normalize(uri)
    if not storage.exists(uri):
        raise ValueError(f"--extra-labels {uri!r} does not exist; pass Label Studio's JSON export or the review CSV")
    data = storage.read_bytes(uri)
    if uri.lower().endswith(".json"):
        answers = parse_label_studio(uri, data)
    elif uri.lower().endswith(".csv"):
        answers = parse_csv(uri, data)
    else:
        raise ValueError(f"--extra-labels {uri!r} must be a .json (Label Studio export) or a .csv file")
    rows = check_answers(uri, answers, class_names, catalog)
    logger.info("extra labels %s: %d reviewed images", uri, len(rows))
    return ExtraLabels(uri, hashlib.sha256(data).hexdigest(), rows)


def parse_label_studio(uri: str, data: bytes) -> list[Answer]:
    """Answers out of Label Studio's JSON export: `annotations[].result[].value.choices` per task.

    Raises:
        ValueError: Not a JSON list of tasks, or a task without image_id/image_uri or with a result
            that is not one choice.
    """
    try:
        tasks = json.loads(data)
    except json.JSONDecodeError as error:
        raise ValueError(f"--extra-labels {uri!r} is not JSON ({error})") from error
    if not isinstance(tasks, list):
        raise ValueError(f"--extra-labels {uri!r} must be a JSON list of tasks (Label Studio's JSON export)")
    answers, problems = [], []
    for position, task in enumerate(tasks):
        where = f"task {task.get('id', position) if isinstance(task, dict) else position}"
        task_data = task.get("data") if isinstance(task, dict) else None
        if not isinstance(task_data, dict) or not task_data.get(IMAGE_ID) or not task_data.get(IMAGE_URI):
            problems.append(f"{where}: no data.image_id/data.image_uri (export the tasks jobs.review wrote)")
            continue
        for annotation in task.get("annotations") or []:
            if annotation.get("was_cancelled"):
                continue
            choices = [
                choice
                for result in annotation.get("result") or []
                for choice in (result.get("value") or {}).get("choices") or []
            ]
            if len(choices) != 1:
                problems.append(f"{where}: an annotation with {len(choices)} choices {choices}; one class per image")
                continue
            answers.append(Answer(where, str(task_data[IMAGE_ID]), str(task_data[IMAGE_URI]), str(choices[0])))
    _raise_if(uri, "is malformed", problems)
    return answers


def parse_csv(uri: str, data: bytes) -> list[Answer]:
    """Answers out of the review CSV (image_id, image_uri, label; other columns ignored).

    Raises:
        ValueError: A required column is missing.
    """
    frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    missing = [column for column in (IMAGE_ID, IMAGE_URI, LABEL) if column not in frame.columns]
    if missing:
        raise ValueError(
            f"--extra-labels {uri!r} has no {missing} column(s) (columns: {list(frame.columns)}); "
            "fill in the `label` column of the review.csv that jobs.review export wrote"
        )
    return [
        Answer(f"row {index + 2}", row[IMAGE_ID], row[IMAGE_URI], row[LABEL].strip())
        for index, row in frame.iterrows()
        if row[LABEL].strip()
    ]


def check_answers(uri: str, answers: list[Answer], class_names: tuple[str, ...], catalog: pd.DataFrame) -> pd.DataFrame:
    """One row per reviewed image, or every problem at once.

    Raises:
        ValueError: Unknown classes, duplicate or conflicting answers, images gone from their URI,
            images already in the training catalog (named with their split).
    """
    if not answers:
        raise ValueError(f"--extra-labels {uri!r} holds no answered image; label some images first")
    problems = [
        f"{answer.where} ({answer.image_id}): unknown class {answer.label!r}; classes are {list(class_names)}"
        for answer in answers
        if answer.label not in class_names
    ]
    by_image: dict[str, list[Answer]] = {}
    for answer in answers:
        by_image.setdefault(answer.image_uri, []).append(answer)
    for group in by_image.values():
        labels = sorted({answer.label for answer in group})
        places = list(dict.fromkeys(answer.where for answer in group))
        # Annotators of one task who agree are one answer; another task or row for the image is not.
        if len(labels) > 1 or len(places) > 1:
            kind = "conflicting answers" if len(labels) > 1 else "duplicate answers"
            problems.append(f"{', '.join(places)} ({group[0].image_id}): {kind} {labels}; keep one answer per image")
    split_of = dict(zip(catalog[IMAGE_URI], catalog[SPLIT]))
    for image_uri, group in by_image.items():
        if image_uri in split_of:
            problems.append(
                f"{group[0].where} ({group[0].image_id}): already in the training catalog's "
                f"{split_of[image_uri]} split; extra labels must be images outside the catalog"
            )
    gone = [group[0] for image_uri, group in by_image.items() if image_uri not in split_of and not _exists(image_uri)]
    problems += [f"{answer.where} ({answer.image_id}): image {answer.image_uri!r} no longer exists" for answer in gone]
    _raise_if(uri, "was refused", problems)
    return pd.DataFrame(
        [(group[0].image_id, image_uri, group[0].label) for image_uri, group in by_image.items()],
        columns=[IMAGE_ID, IMAGE_URI, LABEL],
    )


def _exists(image_uri: str) -> bool:
    try:
        return storage.exists(image_uri)
    except (OSError, ValueError):
        return False


def _raise_if(uri: str, verdict: str, problems: list[str]) -> None:
    if not problems:
        return
    shown = problems[:SHOWN_PROBLEMS]
    more = f"\n  … and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
    raise ValueError(f"--extra-labels {uri!r} {verdict} ({len(problems)} problem(s)):\n  " + "\n  ".join(shown) + more)
