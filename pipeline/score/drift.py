"""Drift of a scoring run, owned here: is the model still looking at the catalog it was trained for?

Three signals, each a distribution summed from the prediction files' tallies (no row read back):
the predicted class mix, the confidence histogram (`pipeline.metrics.DRIFT_EDGES`) and the share
sent to review. Each is compared with two references: training (the model card's drift baseline:
the training split's class counts, the validation split's calibrated confidence histogram and
review share) and the previous run of the same schedule (its run.json's `drift` block). The
statistic is the population-stability index,

    PSI = sum_i (a_i - e_i) * ln(a_i / e_i)

over the observed (a) and expected (e) shares per bin, a share of 0 raised to `EPSILON` so an
empty bin counts as a large, finite difference. Under `drift.psi_warn` (0.1) is ok, under
`drift.psi_alert` (0.25) warn, above alert: the usual bands for PSI.

The predicted mix is biased by the model's confusions, so beside it the report estimates the
catalog's class prior from the calibrated probabilities by EM (Saerens, Latinne & Decaestecker
2002, "Adjusting the outputs of a classifier to new a priori probabilities"), on a seeded sample
of at most `drift.prior_sample_rows` rows: EM needs every row's probability vector each iteration,
which no fixed-size footer summary holds.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow.compute as pc
import ray

from pipeline import reports, storage
from pipeline.config import DriftConfig
from pipeline.records import DriftReport, DriftSignal, ModelCard
from pipeline.score.predictions import DRIFT_DIR, prediction_files, read_run
from pipeline.score.tally import Tally

logger = logging.getLogger(__name__)

EPSILON = 1e-4
STATUSES = ("ok", "warn", "alert")


def population_stability_index(observed: np.ndarray, expected: np.ndarray, epsilon: float = EPSILON) -> float:
    """PSI between two distributions given as counts or shares (each is normalised here).

    Raises:
        ValueError: Different lengths, or a side with nothing in it.
    """
    observed, expected = np.asarray(observed, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if observed.shape != expected.shape or observed.sum() <= 0 or expected.sum() <= 0:
        raise ValueError(f"PSI needs two non-empty distributions of one length, got {observed} and {expected}")
    actual = np.maximum(observed / observed.sum(), epsilon)
    reference = np.maximum(expected / expected.sum(), epsilon)
    return float(np.sum((actual - reference) * np.log(actual / reference)))


def status_of(psi: float, config: DriftConfig) -> str:
    """ok below `psi_warn`, warn below `psi_alert`, alert from there on."""
    if psi < config.psi_warn:
        return "ok"
    return "warn" if psi < config.psi_alert else "alert"


def estimate_prior(
    probabilities: np.ndarray, source_prior: np.ndarray, iterations: int = 200, tolerance: float = 1e-8
) -> np.ndarray:
    """The class prior of the rows behind `probabilities`, by EM (Saerens et al. 2002).

    Each step re-weights every row's posterior by (new prior / source prior), renormalises it, and
    takes the mean as the next prior: a sum over rows, K floats per step.

    Args:
        probabilities: (rows, classes) calibrated posteriors under `source_prior`.
        source_prior: The class prior the posteriors were fitted under (training's mix).
    """
    source = np.asarray(source_prior, dtype=np.float64)
    source = np.maximum(source / source.sum(), EPSILON)
    prior: np.ndarray = source.copy()
    for _ in range(iterations):
        weighted = probabilities * (prior / source)
        weighted /= np.maximum(weighted.sum(axis=1, keepdims=True), 1e-300)
        updated: np.ndarray = weighted.mean(axis=0)
        converged = float(np.abs(updated - prior).max()) < tolerance
        prior = updated
        if converged:
            break
    return prior


def reweight_to_prior(probabilities: np.ndarray, source_prior: np.ndarray, target_prior: np.ndarray) -> np.ndarray:
    """Posteriors moved from the source prior to the target prior (Bayes' rule, renormalised)."""
    source = np.maximum(np.asarray(source_prior, dtype=np.float64), EPSILON)
    weighted = probabilities * (np.asarray(target_prior, dtype=np.float64) / (source / source.sum()))
    result: np.ndarray = weighted / np.maximum(weighted.sum(axis=1, keepdims=True), 1e-300)
    return result


def drift_report(
    tally: Tally,
    card: ModelCard,
    config: DriftConfig,
    previous: DriftReport | None = None,
    previous_run: str | None = None,
    estimated_prior: np.ndarray | None = None,
) -> DriftReport:
    """Every signal of this run's tally against training and against the previous run."""
    scored = tally.rows - tally.error_rows
    observed = {
        "class_mix": tally.predicted_counts.astype(np.float64),
        "confidence": tally.confidence_counts.astype(np.float64),
        "review_share": np.array([tally.scored_review_rows, scored - tally.scored_review_rows], dtype=np.float64),
    }
    references = {
        "training": (_training_reference(card), "the model card has no drift baseline; retrain"),
        "previous_run": (_previous_reference(previous), "no previous run of this schedule"),
    }
    signals = [
        _signal(name, reference, values, expected, missing, scored, config, previous)
        for reference, (expected, missing) in references.items()
        for name, values in observed.items()
    ]
    judged = [signal.status for signal in signals if signal.status]
    status = max(judged, key=STATUSES.index) if judged else "ok"
    return DriftReport(
        status=status,
        rows=scored,
        predicted_counts=tally.predicted_counts.tolist(),
        confidence_counts=tally.confidence_counts.tolist(),
        review_rows=tally.scored_review_rows,
        signals=tuple(signals),
        estimated_prior=[round(float(v), 6) for v in estimated_prior] if estimated_prior is not None else None,
        previous_run=previous_run,
    )


def _signal(
    name: str,
    reference: str,
    observed: np.ndarray,
    expected_set: dict[str, np.ndarray] | None,
    missing: str,
    scored: int,
    config: DriftConfig,
    previous: DriftReport | None,
) -> DriftSignal:
    expected = expected_set.get(name) if expected_set else None
    if expected is None or expected.sum() <= 0:
        return DriftSignal(name, reference, observed.tolist(), [], None, None, missing)
    psi = population_stability_index(observed, expected) if observed.sum() > 0 else None
    note = ""
    status = status_of(psi, config) if psi is not None else None
    small_reference = reference == "previous_run" and previous is not None and previous.rows < config.min_rows
    if scored < config.min_rows or small_reference:
        status, note = None, f"fewer than drift.min_rows={config.min_rows} scored rows: shown, not judged"
    return DriftSignal(
        name, reference, observed.tolist(), expected.tolist(), round(psi, 6) if psi is not None else None, status, note
    )


def _training_reference(card: ModelCard) -> dict[str, np.ndarray] | None:
    baseline = card.drift_baseline
    if baseline is None:
        return None
    share = baseline.review_share
    return {
        "class_mix": np.array([baseline.class_counts.get(name, 0) for name in card.class_names], dtype=np.float64),
        "confidence": np.array(baseline.confidence_counts, dtype=np.float64),
        "review_share": np.array([share, 1.0 - share]),
    }


def _previous_reference(previous: DriftReport | None) -> dict[str, np.ndarray] | None:
    if previous is None:
        return None
    return {
        "class_mix": np.array(previous.predicted_counts, dtype=np.float64),
        "confidence": np.array(previous.confidence_counts, dtype=np.float64),
        "review_share": np.array([previous.review_rows, previous.rows - previous.review_rows], dtype=np.float64),
    }


def sample_probabilities(prediction_uris: list[str], rows: int, limit: int, seed: int = 0) -> np.ndarray | None:
    """A seeded sample of at most about `limit` scored rows' probabilities, read on workers; the
    driver receives only the sample (`limit` × classes floats). None without files or rows."""
    if not prediction_uris or rows <= 0 or limit <= 0:
        return None
    paths, filesystem = storage.arrow_paths(prediction_uris)
    dataset = ray.data.read_parquet(paths, filesystem=filesystem, columns=["probabilities"])
    if rows > limit:
        dataset = dataset.random_sample(limit / rows, seed=seed)
    table = dataset.to_arrow_refs()
    chunks = []
    for part in ray.get(table):
        column = part.column("probabilities")
        kept = pc.drop_null(column).combine_chunks()
        if len(kept):
            chunks.append(kept.flatten().to_numpy(zero_copy_only=False).reshape(len(kept), -1))
    return np.concatenate(chunks).astype(np.float64) if chunks else None


def source_prior(card: ModelCard) -> np.ndarray | None:
    """Training's class mix, the prior the posteriors were fitted under; None without a baseline."""
    if card.drift_baseline is None:
        return None
    counts = np.array([card.drift_baseline.class_counts.get(name, 0) for name in card.class_names], dtype=np.float64)
    return counts / counts.sum() if counts.sum() > 0 else None


def measure_drift(
    output_uri: str, card: ModelCard, config: DriftConfig, tally: Tally, previous_run_uri: str | None
) -> DriftReport:
    """The run's drift report, written as drift/ (chart and page); run.json gets the block.

    Args:
        tally: The sum of every prediction file's tally in `output_uri`.
        previous_run_uri: The previous run of the same schedule (incremental mode), or None.
    """
    previous = read_run(previous_run_uri) if previous_run_uri else None
    prior = None
    source = source_prior(card)
    if source is not None and config.prior_sample_rows:
        sample = sample_probabilities(
            prediction_files(output_uri), tally.rows - tally.error_rows, config.prior_sample_rows
        )
        prior = estimate_prior(sample, source) if sample is not None else None
    report = drift_report(
        tally, card, config, previous.drift if previous else None, previous.run_id if previous else None, prior
    )
    write_drift_report(output_uri, report, card)
    logger.info("drift %s: %s", report.status, [(s.name, s.reference, s.psi, s.status) for s in report.signals])
    return report


def write_drift_report(output_uri: str, report: DriftReport, card: ModelCard) -> None:
    """drift/drift.png (a small chart per signal) and drift/report.html, for every run."""
    directory = storage.join(output_uri, DRIFT_DIR)
    class_names = list(card.class_names)
    storage.write_bytes(storage.join(directory, "drift.png"), reports.drift_png(report.to_dict(), class_names))
    storage.write_text(
        storage.join(directory, "report.html"),
        reports.drift_html(report.to_dict(), class_names, card.name, card.warnings),
    )


def signals_scheduler(report: DriftReport, config: DriftConfig) -> bool:
    """Whether jobs.score should exit with its drift code (3): `drift.exit_on` is warn or alert
    and the run's status reached it."""
    if config.exit_on == "never":
        return False
    return STATUSES.index(report.status) >= STATUSES.index(config.exit_on)
