"""Drift: PSI on distributions worked by hand, status bands, drift signals that sum across files,
and EM that recovers a known class prior from calibrated probabilities."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.spec import InputSpec
from pipeline.config import DriftConfig
from pipeline.metrics import DRIFT_BINS, confidence_histogram
from pipeline.records import DriftBaseline, DriftReport, ModelCard, ModelRef, RunManifest
from pipeline.score.drift import (
    drift_report,
    estimate_prior,
    population_stability_index,
    reweight_to_prior,
    signals_scheduler,
    status_of,
)
from pipeline.score.tally import Tally, tally_table
from tests.unit.test_tally import CLASSES, scored_rows

CONFIG = DriftConfig(min_rows=10)


def card(baseline: DriftBaseline | None) -> ModelCard:
    return ModelCard("custom_cnn", "v1", CLASSES, InputSpec(32), drift_baseline=baseline)


BASELINE = DriftBaseline(
    class_counts={"boots": 100, "dress": 100, "shirt": 100, "socks": 100},
    confidence_counts=[0] * (DRIFT_BINS - 1) + [400],
    review_share=0.0,
)


def tally_of(predicted: list[int], confidence: list[int], review: int) -> Tally:
    rows = sum(predicted)
    return Tally(
        len(CLASSES),
        rows=rows,
        predicted_counts=np.array(predicted),
        confidence_counts=np.array(confidence),
        scored_review_rows=review,
    )


def test_psi_matches_hand_computed_values():
    assert population_stability_index([5, 5], [5, 5]) == 0.0
    expected = (0.5 - 0.9) * math.log(0.5 / 0.9) + (0.5 - 0.1) * math.log(0.5 / 0.1)
    assert population_stability_index([50, 50], [0.9, 0.1]) == pytest.approx(expected, abs=1e-12)
    # An empty bin counts as a share of 1e-4: large and finite, not infinite.
    empty = (1 - 0.5) * math.log(1 / 0.5) + (1e-4 - 0.5) * math.log(1e-4 / 0.5)
    assert population_stability_index([7, 0], [1, 1]) == pytest.approx(empty, abs=1e-12)
    with pytest.raises(ValueError, match="non-empty"):
        population_stability_index([0, 0], [1, 1])


@pytest.mark.parametrize(
    ("psi", "status"), [(0.0, "ok"), (0.0999, "ok"), (0.1, "warn"), (0.2499, "warn"), (0.25, "alert"), (3.0, "alert")]
)
def test_status_bands(psi, status):
    assert status_of(psi, DriftConfig()) == status


def test_drift_config_names_the_key_and_the_fix():
    with pytest.raises(ValueError, match="drift.psi_warn=0.3"):
        DriftConfig(psi_warn=0.3, psi_alert=0.25)
    with pytest.raises(ValueError, match="drift.exit_on='sometimes'.*never, warn, alert"):
        DriftConfig(exit_on="sometimes")


def test_drift_signals_of_summed_file_tallies_equal_those_of_all_rows():
    table = scored_rows(3)
    bounds = [0, 1, 300, 301, table.num_rows]
    total = Tally(len(CLASSES))
    for start, stop in zip(bounds[:-1], bounds[1:]):
        total.add(Tally.from_json(tally_table(table.slice(start, stop - start), list(CLASSES)).to_json()))
    frame = table.to_pandas()
    scored = frame[frame["error"].isna()]  # labelled or not, known label or not
    probabilities = np.stack(scored["probabilities"].to_numpy())
    assert total.predicted_counts.tolist() == np.bincount(probabilities.argmax(axis=1), minlength=4).tolist()
    assert total.confidence_counts.tolist() == confidence_histogram(probabilities.max(axis=1)).tolist()
    assert total.confidence_counts.sum() == len(scored) == total.rows - total.error_rows
    assert total.scored_review_rows == int(scored["low_confidence"].sum())
    assert total.scored_review_rows > total.review_rows  # unlabelled rows count too


def test_confidence_histogram_edges():
    assert confidence_histogram(np.array([0.0, 0.0999, 0.1, 0.95, 1.0])).tolist() == [2, 1, 0, 0, 0, 0, 0, 0, 0, 2]


def test_matching_catalog_is_ok_and_shifted_one_alerts():
    same = drift_report(tally_of([25, 25, 25, 25], [0] * 9 + [100], 0), card(BASELINE), CONFIG)
    assert same.status == "ok"
    assert {(s.name, s.reference): s.psi for s in same.signals if s.reference == "training"} == {
        ("class_mix", "training"): 0.0,
        ("confidence", "training"): 0.0,
        ("review_share", "training"): 0.0,
    }
    shifted = drift_report(tally_of([85, 5, 5, 5], [0] * 9 + [100], 0), card(BASELINE), CONFIG)
    assert shifted.status == "alert"
    mix = next(s for s in shifted.signals if s.name == "class_mix" and s.reference == "training")
    assert mix.status == "alert" and mix.psi > 0.25
    unsure = drift_report(tally_of([25, 25, 25, 25], [0, 0, 0, 0, 10, 10, 10, 10, 10, 50], 40), card(BASELINE), CONFIG)
    assert {s.name for s in unsure.signals if s.status == "alert"} == {"confidence", "review_share"}


def test_a_small_run_is_shown_but_not_judged_and_a_card_without_baseline_says_so():
    small = drift_report(tally_of([9, 0, 0, 0], [0] * 9 + [9], 0), card(BASELINE), CONFIG)
    assert small.status == "ok"
    assert all(s.status is None for s in small.signals)
    assert all("drift.min_rows=10" in s.note for s in small.signals if s.reference == "training")
    bare = drift_report(tally_of([25, 25, 25, 25], [0] * 9 + [100], 0), card(None), CONFIG)
    assert all(s.psi is None and "no drift baseline" in s.note for s in bare.signals if s.reference == "training")


def test_previous_run_is_the_second_reference_and_survives_run_json():
    first = drift_report(tally_of([25, 25, 25, 25], [0] * 9 + [100], 0), card(BASELINE), CONFIG)
    manifest = RunManifest("r1", "completed", "t", ModelRef("m", "custom_cnn", "v1"), "c", "o", "keras", 0.5, {},
                           drift=first)  # fmt: skip
    again = RunManifest.from_dict(manifest.to_dict()).drift
    assert again == first
    second = drift_report(tally_of([10, 10, 40, 40], [0] * 9 + [100], 0), card(BASELINE), CONFIG, again, "r1")
    previous = {s.name: s for s in second.signals if s.reference == "previous_run"}
    assert previous["class_mix"].expected == [25, 25, 25, 25]
    assert previous["class_mix"].status == "alert" and second.previous_run == "r1"


def test_exit_on_decides_when_the_scheduler_is_told():
    report = DriftReport("warn", 100, [25] * 4, [0] * 10, 0, ())
    assert not signals_scheduler(report, DriftConfig())
    assert signals_scheduler(report, DriftConfig(exit_on="warn"))
    assert not signals_scheduler(report, DriftConfig(exit_on="alert"))


def calibrated_posteriors(prior: np.ndarray, source: np.ndarray, rows: int, seed: int):
    """Rows drawn under `prior` from 1-D Gaussian classes (means 0, 1.5, 3, 4.5), with the exact
    Bayes posteriors under `source`: calibrated by construction."""
    rng = np.random.default_rng(seed)
    means = np.arange(len(source)) * 1.5
    labels = rng.choice(len(prior), size=rows, p=prior)
    features = rng.normal(means[labels], 1.0)
    likelihood = np.exp(-0.5 * (features[:, None] - means[None, :]) ** 2)
    joint = likelihood * source
    return joint / joint.sum(axis=1, keepdims=True), labels


def test_em_recovers_a_known_prior_from_calibrated_probabilities():
    source = np.array([0.55, 0.25, 0.15, 0.05])  # imbalanced training
    target = np.full(4, 0.25)  # a balanced catalog
    probabilities, labels = calibrated_posteriors(target, source, 40_000, seed=0)
    estimate = estimate_prior(probabilities, source)
    predicted_mix = np.bincount(probabilities.argmax(axis=1), minlength=4) / len(labels)
    assert np.abs(estimate - target).max() < 0.02
    assert np.abs(predicted_mix - target).max() > 0.1  # what EM corrects: the confusions' bias
    assert estimate.sum() == pytest.approx(1.0)
    reweighted = reweight_to_prior(probabilities, source, estimate)
    assert (reweighted.argmax(axis=1) == labels).mean() > (probabilities.argmax(axis=1) == labels).mean()


def test_em_leaves_the_prior_alone_when_nothing_shifted():
    source = np.array([0.55, 0.25, 0.15, 0.05])
    probabilities, _ = calibrated_posteriors(source, source, 40_000, seed=1)
    assert np.abs(estimate_prior(probabilities, source) - source).max() < 0.02
