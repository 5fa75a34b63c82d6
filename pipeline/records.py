"""The records the product writes and reads back: model card, run manifest, evaluation summary,
and the incremental view's pointer.

Each record is a frozen dataclass with one writer (`to_dict`, then JSON) and one reader
(`from_dict`, with the checks a reader needs). The JSON stays flat and readable by people and by
other tools; fields the product itself never reads back (training's history, the config it ran
with, metrics) travel in `details` and are written next to the typed fields, not under a key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from models.spec import InputSpec

# --------------------------------------------------------------------------- model card


@dataclass(frozen=True)
class Calibration:
    """Temperature scaling fitted on the validation split; 1.0 leaves probabilities unchanged."""

    temperature: float = 1.0
    method: str = "temperature scaling fitted on the validation split"
    validation_ece_before: float | None = None
    validation_ece_after: float | None = None
    test_ece_before: float | None = None
    test_ece_after: float | None = None
    # The test split's reliability bins (`pipeline.metrics.reliability_bins`) before and after
    # scaling, so a report can draw both diagrams; None in cards from before they were recorded.
    test_reliability_before: dict[str, list[float]] | None = None
    test_reliability_after: dict[str, list[float]] | None = None
    # Validation images of each class the temperature was fitted on; None in older cards.
    fitted_images_per_class: dict[str, int] | None = None
    # What the temperature was fitted on (`pipeline.train.folds`); cards from before the field
    # existed were all fitted on the validation split.
    fitted_on: str = "validation split"


@dataclass(frozen=True)
class Review:
    """The lowest confidence whose kept validation rows reach `target_accuracy`; rows below it go
    to people. 1.0 (review everything) when no threshold reaches the target."""

    threshold: float
    target_accuracy: float | None = None
    validation_kept_share: float | None = None
    validation_kept_accuracy: float | None = None
    # Validation images of each class the threshold was chosen on; None in older cards.
    fitted_images_per_class: dict[str, int] | None = None
    fitted_on: str = "validation split"  # as `Calibration.fitted_on`


@dataclass(frozen=True)
class DriftBaseline:
    """What scoring compares a catalog with to judge drift: the training split's class counts, and
    the validation split's calibrated confidence histogram (`pipeline.metrics.DRIFT_EDGES`) and
    the share of it below the review threshold."""

    class_counts: dict[str, int]
    confidence_counts: list[int]
    review_share: float


@dataclass(frozen=True)
class OnnxExport:
    """What the ONNX export left: `file` is None when it was refused, and `reason` says why."""

    file: str | None
    max_abs_diff: float | None = None
    tolerance: float | None = None
    reason: str | None = None
    cpu_chunk: int | None = None  # images per ONNX Runtime call on CPU, measured at export
    probe_images: int | None = None
    onnxruntime: str | None = None


@dataclass(frozen=True)
class ModelCard:
    """What scoring needs to use a trained model, and what a person needs to trust it."""

    name: str
    version: str
    class_names: tuple[str, ...]
    input: InputSpec
    weights_source: str = "none (trained from scratch)"
    onnx: OnnxExport | None = None
    calibration: Calibration | None = None
    review: Review | None = None
    drift_baseline: DriftBaseline | None = None  # None in cards written before drift reports
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    REQUIRED = ("name", "version", "class_names", "input")

    @property
    def temperature(self) -> float:
        return self.calibration.temperature if self.calibration else 1.0

    @property
    def review_threshold(self) -> float:
        """The card's own review threshold; 0.5 for a card that training did not calibrate."""
        return self.review.threshold if self.review else 0.5

    @property
    def warnings(self) -> tuple[str, ...]:
        """What training warned about this model (e.g. a class its calibration barely saw), which
        every scoring run repeats so a nightly owner who never reads the card still sees it."""
        return tuple(self.details.get("warnings") or ())

    def to_dict(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "class_names": list(self.class_names),
            "input": self.input.to_dict(),
            "weights_source": self.weights_source,
        }
        for key in ("onnx", "calibration", "review", "drift_baseline"):
            block = getattr(self, key)
            if block is not None:
                values[key] = dataclasses.asdict(block)
        return {**values, **self.details}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelCard:
        """Raises:
        ValueError: A required field is missing (a card from an older jobs.train).
        """
        missing = [key for key in cls.REQUIRED if key not in values]
        if missing:
            raise ValueError(f"lacks {missing}; retrain with this version of jobs.train")
        typed = {f.name for f in dataclasses.fields(cls)}
        return cls(
            name=values["name"],
            version=values["version"],
            class_names=tuple(values["class_names"]),
            input=InputSpec.from_dict(values["input"]),
            weights_source=values.get("weights_source", "none (trained from scratch)"),
            onnx=_block(OnnxExport, values.get("onnx")),
            calibration=_block(Calibration, values.get("calibration")),
            review=_block(Review, values.get("review")),
            drift_baseline=_block(DriftBaseline, values.get("drift_baseline")),
            details={key: value for key, value in values.items() if key not in typed},
        )


def _block(kind: Any, values: dict[str, Any] | None) -> Any:
    """A typed sub-record from its JSON object, keeping only the fields the type knows."""
    if not values:
        return None
    known = {f.name for f in dataclasses.fields(kind)}
    return kind(**{key: value for key, value in values.items() if key in known})


# --------------------------------------------------------------------------- run manifest


@dataclass(frozen=True)
class ModelRef:
    uri: str
    name: str
    version: str


@dataclass(frozen=True)
class RunCounts:
    """Rows in and out of a scoring run; `resumed` were scored by an earlier, unfinished run."""

    rows_in: int
    rows_out: int
    scored: int
    errors: int
    resumed: int
    scored_this_run: int
    prediction_files: int

    def to_dict(self) -> dict[str, int]:
        return {
            "in": self.rows_in,
            "out": self.rows_out,
            "scored": self.scored,
            "errors": self.errors,
            "resumed": self.resumed,
            "scored_this_run": self.scored_this_run,
            "prediction_files": self.prediction_files,
        }

    @classmethod
    def from_dict(cls, values: dict[str, int]) -> RunCounts:
        return cls(
            values["in"],
            values["out"],
            values["scored"],
            values["errors"],
            values["resumed"],
            values["scored_this_run"],
            values["prediction_files"],
        )


@dataclass(frozen=True)
class RunManifest:
    """run.json: written "running" before the first row and rewritten last; a run is complete only
    when it says "completed"."""

    run_id: str
    status: str  # running | completed | failed
    started_at: str
    model: ModelRef
    catalog: str
    output: str
    engine: str
    low_confidence_threshold: float
    config: dict[str, Any]
    problems: tuple[str, ...] = ()
    counts: RunCounts | None = None
    timings: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None  # the evaluation headline; None when unlabelled
    drift: DriftReport | None = None
    # The model card's warnings, known before the first row: they hold for every row it scores.
    model_warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["problems"] = list(self.problems)
        values["model_warnings"] = list(self.model_warnings)
        values["counts"] = self.counts.to_dict() if self.counts else None
        values["drift"] = self.drift.to_dict() if self.drift else None
        if self.status == "running":  # what a reader of an unfinished run sees: no figures yet
            for key in ("problems", "counts", "timings", "evaluation", "drift"):
                values.pop(key)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunManifest:
        counts = values.get("counts")
        return cls(
            run_id=values["run_id"],
            status=values["status"],
            started_at=values["started_at"],
            model=ModelRef(**values["model"]),
            catalog=values["catalog"],
            output=values["output"],
            engine=values["engine"],
            low_confidence_threshold=values["low_confidence_threshold"],
            config=values["config"],
            problems=tuple(values.get("problems") or ()),
            counts=RunCounts.from_dict(counts) if counts else None,
            timings=values.get("timings"),
            evaluation=values.get("evaluation"),
            drift=DriftReport.from_dict(values["drift"]) if values.get("drift") else None,
            model_warnings=tuple(values.get("model_warnings") or ()),
        )


# --------------------------------------------------------------------------- drift report


@dataclass(frozen=True)
class DriftSignal:
    """One signal against one reference: both distributions as counts, their PSI and its status.
    `psi` and `status` are None when the reference is missing or either side is too small."""

    name: str  # class_mix | confidence | review_share
    reference: str  # training | previous_run
    observed: list[float]
    expected: list[float]
    psi: float | None
    status: str | None  # ok | warn | alert; None when not judged
    note: str = ""


@dataclass(frozen=True)
class DriftReport:
    """run.json's `drift` block: this run's signal counts (the next run's "previous run"), each
    signal's PSI against training and the previous run, the EM estimate of the class prior, and
    the worst status."""

    status: str  # ok | warn | alert
    rows: int
    predicted_counts: list[int]
    confidence_counts: list[int]
    review_rows: int
    signals: tuple[DriftSignal, ...]
    estimated_prior: list[float] | None = None
    previous_run: str | None = None

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["signals"] = [dataclasses.asdict(signal) for signal in self.signals]
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DriftReport:
        known = {f.name for f in dataclasses.fields(cls)}
        fields = {key: value for key, value in values.items() if key in known}
        fields["signals"] = tuple(DriftSignal(**signal) for signal in values.get("signals", []))
        return cls(**fields)


# --------------------------------------------------------------------------- incremental view


LEGACY_STATE_FILE = "current/state.parquet"  # where pointers written before `state/` kept it


@dataclass(frozen=True)
class ViewPointer:
    """current/current.json of a scheduled (incremental) root: written last, it switches the view.

    `state` is the folder (under the root) listing every live image's fingerprint and the run
    whose row is current; `runs` are the runs holding those rows.
    """

    model_version: str
    model_name: str
    catalog: str
    state: str
    latest_run: str | None
    runs: tuple[str, ...]
    rows: int
    scored_this_run: int
    unchanged: int
    deleted: int
    errors_this_run: int
    published_at: str

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["runs"] = list(self.runs)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ViewPointer:
        return cls(
            model_version=str(values["model_version"]),
            model_name=str(values.get("model_name", "")),
            catalog=str(values.get("catalog", "")),
            state=str(values.get("state", LEGACY_STATE_FILE)),
            latest_run=values.get("latest_run"),
            runs=tuple(str(run) for run in values["runs"]),
            rows=int(values["rows"]),
            scored_this_run=int(values.get("scored_this_run", 0)),
            unchanged=int(values.get("unchanged", 0)),
            deleted=int(values.get("deleted", 0)),
            errors_this_run=int(values.get("errors_this_run", 0)),
            published_at=str(values.get("published_at", "")),
        )


# --------------------------------------------------------------------------- evaluation summary


@dataclass(frozen=True)
class ReviewFigures:
    """How many rows went to review and how accurate the rest were."""

    threshold: float
    rows: int
    accuracy_on_rest: float | None


@dataclass(frozen=True)
class EvaluationSummary:
    """evaluation/summary.json: a labelled run's metrics, with what was left out and why."""

    model_name: str
    model_version: str
    catalog: str
    run_id: str
    rows: int
    error_rows: int
    evaluated_rows: int
    unknown_labels: dict[str, int]
    review: ReviewFigures
    metrics: dict[str, Any]  # pipeline.metrics.summarize

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EvaluationSummary:
        return cls(**{**values, "review": ReviewFigures(**values["review"])})

    def headline(self) -> dict[str, Any]:
        """The figures run.json carries, so a reader of the run needs no second file."""
        return {
            "accuracy": self.metrics["accuracy"],
            "accuracy_interval": self.metrics.get("accuracy_interval"),  # absent from summaries before intervals
            "macro_f1": self.metrics["macro"]["f1"],
            "macro_f1_interval": self.metrics["macro"].get("f1_interval"),
            "loss": self.metrics["loss"],
            "evaluated_rows": self.evaluated_rows,
            "unknown_label_rows": int(sum(self.unknown_labels.values())),
            "review_rows": self.review.rows,
        }
