"""benchmarks.workers_accuracy's verdict and flag checks, without Ray: Welch's t-test on the seeds'
held-out macro-F1, and bad flags refused with exit 2 before any work."""

from __future__ import annotations

import json
import os

import pytest

from benchmarks import workers_accuracy
from benchmarks.common import REPO
from benchmarks.workers_accuracy import Row, compare, parse_rows, summarize, verdicts


def _row(model: str, workers: int, seed: int, macro_f1: float, minority_f1: float) -> dict:
    return {
        "model": model,
        "workers": workers,
        "learning_rate_scaling": "linear",
        "seed": seed,
        "global_batch_size": 32 * workers,
        "heldout": {"accuracy": macro_f1, "macro_f1": macro_f1, "minority_f1": minority_f1},
    }


def test_rows_parse_and_bad_pairs_are_refused_naming_the_fix():
    assert parse_rows("1:linear, 2:none,4:fixed") == (Row(1, "linear"), Row(2, "none"), Row(4, "fixed"))
    for bad in ("2:sqrt", "0:linear", "two:linear", "1:linear,1:linear", ""):
        with pytest.raises(ValueError, match="--rows"):
            parse_rows(bad)


def test_a_fixed_row_splits_the_study_batch_over_its_workers_at_unscaled_rates():
    settings = workers_accuracy.Settings(
        "catalog", "heldout", "note", ("custom_cnn",), (Row(4, "fixed"),), (42,), 42, 32, 1, 1, 1, "none"
    )
    overrides = workers_accuracy.row_overrides("custom_cnn", Row(4, "fixed"), 42, settings)
    assert "train.global_batch_size=32" in overrides and "train.learning_rate_scaling=none" in overrides
    linear = workers_accuracy.row_overrides("custom_cnn", Row(4, "linear"), 42, settings)
    assert "train.learning_rate_scaling=linear" in linear and not any("global_batch" in item for item in linear)


def test_seeds_within_noise_are_the_same_and_a_clear_gap_differs():
    same = compare([0.80, 0.84, 0.82], [0.81, 0.83, 0.85])
    assert same["verdict"] == "same within noise" and same["p_value"] > 0.05
    assert same["difference"] == pytest.approx(0.01)
    gap = compare([0.80, 0.81, 0.82], [0.60, 0.61, 0.62])
    assert gap["verdict"] == "differs" and gap["p_value"] < 0.05 and gap["difference"] == pytest.approx(-0.2)
    assert compare([0.8], [0.7, 0.75])["verdict"] == "undetermined"
    assert compare([0.5, 0.5], [0.5, 0.5])["verdict"] == "same within noise"
    assert compare([0.5, 0.5], [0.6, 0.6])["verdict"] == "differs"


def test_summary_gives_mean_and_std_over_seeds_and_judges_each_worker_count_against_one():
    rows = [
        _row("custom_cnn", workers, seed, f1, minority)
        for workers, figures in (
            (1, [(0.80, 0.5), (0.82, 0.6), (0.84, 0.7)]),
            (4, [(0.60, 0.5), (0.61, 0.6), (0.62, 0.7)]),
        )
        for seed, (f1, minority) in enumerate(figures)
    ]
    summary = summarize(rows)
    one = next(entry for entry in summary if entry["workers"] == 1)
    assert one["macro_f1"]["mean"] == pytest.approx(0.82) and one["macro_f1"]["std"] == pytest.approx(0.02)
    assert one["seeds"] == [0, 1, 2] and one["global_batch_size"] == 32
    (judged,) = verdicts(summary)
    assert judged["workers"] == 4 and judged["against"] == {"workers": 1, "learning_rate_scaling": "linear"}
    assert judged["macro_f1"]["verdict"] == "differs"
    assert judged["minority_f1"]["verdict"] == "same within noise"
    table = workers_accuracy.markdown(summary, [judged])
    assert "| custom_cnn | 4 | linear | 128 | 3 | 0.610 ± 0.010 | 0.600 ± 0.100 | differs (Δ -0.210, p=0.00) |" in table


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--rows", "3:sqrt"], "--rows"),
        (["--models", "resnet"], "--models"),
        (["--seeds", "0"], "--seeds"),
        (["--weights", "/nonexistent/base.h5"], "--weights"),
        (["--heldout", "/nonexistent/catalog"], "--heldout"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag_before_any_work(flags, named, tmp_path, capsys):
    assert workers_accuracy.main([*flags, "--output", str(tmp_path / "w.json")]) == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "w.json").exists()


def test_append_keeps_the_rows_already_run_and_refuses_rows_run_with_other_settings(tmp_path, capsys):
    """`--append` with every row already in --output runs nothing (no Ray) and re-judges them; the
    same file with another image size is refused before any work."""
    output = tmp_path / "w.json"
    flags = ["--heldout", os.path.join(REPO, "data", "heldout_catalog"), "--rows", "1:linear,4:fixed", "--seeds", "2"]
    rows = [
        {**_row("custom_cnn", workers, seed, 0.8 + seed / 100, 0.7), "learning_rate_scaling": scaling}
        for workers, scaling in ((1, "linear"), (4, "fixed"))
        for seed in (42, 43)
    ]
    earlier = {"settings": {**_settings(flags, output), "image_size": 48}, "rows": rows}
    output.write_text(json.dumps(earlier))
    assert workers_accuracy.main([*flags, "--append", "--output", str(output)]) == 0
    report = json.loads(output.read_text())
    assert report["rows"] == rows and report["settings"]["rows"] == ["1:linear", "4:fixed"]
    (judged,) = report["verdicts"]
    assert judged["learning_rate_scaling"] == "fixed" and judged["against"]["learning_rate_scaling"] == "linear"
    assert workers_accuracy.main([*flags, "--image-size", "32", "--append", "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert "--append" in err and "'image_size'" in err


def _settings(flags: list[str], output: object) -> dict:
    args = workers_accuracy.build_parser().parse_args([*flags, "--output", str(output)])
    return workers_accuracy._described(workers_accuracy.settings_from_args(args, "unused"), args)
