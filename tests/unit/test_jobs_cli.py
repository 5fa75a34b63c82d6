"""Bad input exits 2 with a message naming the problem, before Ray starts."""

from __future__ import annotations

import json
import os

import pytest
import ray

from jobs import score, train
from tests.factories import make_tree_catalog


@pytest.fixture
def catalog(tmp_path):
    return make_tree_catalog(str(tmp_path / "cat"), {"a": 6, "b": 6})


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--models", "resnet"], "unknown model name"),
        (["--epochs", "0"], "train.epochs"),
        (["--workers", "0"], "resources.workers"),
        (["--weights", "/nope/weights.h5", "--models", "mobilenet_v2"], "does not exist"),
    ],
)
def test_train_bad_flags_exit_2(tmp_path, catalog, capsys, extra, message):
    code = train.main(
        ["--catalog", catalog, "--output", str(tmp_path / "out"), "--set", "train.batch_size_per_worker=2"] + extra
    )
    assert code == 2
    assert message in capsys.readouterr().err
    assert not ray.is_initialized()


def test_train_bad_catalogs_exit_2(tmp_path, capsys):
    one_class = make_tree_catalog(str(tmp_path / "one"), {"a": 8})
    assert train.main(["--catalog", one_class, "--output", str(tmp_path / "o")]) == 2
    assert "one class" in capsys.readouterr().err
    empty_class = make_tree_catalog(str(tmp_path / "empty"), {"a": 8, "b": 8})
    (tmp_path / "empty" / "c").mkdir()
    assert train.main(["--catalog", empty_class, "--output", str(tmp_path / "o")]) == 2
    assert "hold no images" in capsys.readouterr().err
    assert train.main(["--catalog", str(tmp_path / "missing"), "--output", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_train_rejects_weights_that_do_not_fit(tmp_path, catalog, capsys):
    import keras

    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    path = str(tmp_path / "wrong.weights.h5")
    other.save_weights(path)
    code = train.main(
        [
            "--catalog",
            catalog,
            "--output",
            str(tmp_path / "o"),
            "--models",
            "mobilenet_v2",
            "--weights",
            path,
            "--set",
            "train.batch_size_per_worker=2",
        ]
    )
    assert code == 2 and "does not fit" in capsys.readouterr().err


def test_score_bad_input_exits_2(tmp_path, catalog, color_artifact, capsys):
    out = str(tmp_path / "out")
    assert score.main(["--catalog", str(tmp_path / "nope"), "--model", color_artifact, "--output", out]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert score.main(["--catalog", catalog, "--model", str(tmp_path), "--output", out]) == 2
    assert "not a model artifact" in capsys.readouterr().err
    (tmp_path / "m.csv").write_text("path\nx.png\n")
    assert score.main(["--catalog", str(tmp_path / "m.csv"), "--model", color_artifact, "--output", out]) == 2
    assert "image_uri" in capsys.readouterr().err
    (tmp_path / "emptydir").mkdir()
    assert score.main(["--catalog", str(tmp_path / "emptydir"), "--model", color_artifact, "--output", out]) == 2
    assert "no images" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert score.main(["--catalog", catalog, "--model", color_artifact, "--output", str(blocker / "sub")]) == 2
    assert "cannot be written" in capsys.readouterr().err
    assert score.main(["--catalog", catalog, "--model", color_artifact, "--output", out, "--actors", "0"]) == 2
    assert 'resources.actors=0 is invalid; allowed: a positive integer or "auto"' in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        score.main(["--catalog", catalog, "--model", color_artifact, "--output", out, "--actors", "lots"])
    assert exit_info.value.code == 2 and "--actors" in capsys.readouterr().err
    assert not ray.is_initialized()


def test_unsafe_model_is_refused(tmp_path, catalog, color_artifact, capsys):
    """A .keras file with a Lambda layer would run arbitrary code: safe mode must refuse it."""
    import shutil

    import keras

    unsafe = tmp_path / "unsafe"
    shutil.copytree(color_artifact, unsafe)
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 0 + 1.0)(keras.layers.Flatten()(inputs))[:, :3])
    model.save(unsafe / "model.keras")
    from pipeline.artifacts import load_keras_model

    with pytest.raises(ValueError, match="safe mode"):
        load_keras_model(str(unsafe))
    card = json.loads((unsafe / "model_card.json").read_text())
    assert card["name"] == "custom_cnn"


def write_run(output, name, status, evaluation):
    from pipeline.records import ModelRef, RunCounts, RunManifest
    from pipeline.score.predictions import write_run as write_manifest

    os.makedirs(output)
    counts = RunCounts(500, 500, 497, 3, 0, 500, 1)
    run = RunManifest(
        "r", status, "t", ModelRef("m", name, "v"), "c", output, "keras", 0.5, {}, (), counts, {}, evaluation
    )
    write_manifest(output, run)


def test_summarize_prints_one_line_per_run_and_refuses_a_folder_without_run_json(tmp_path, capsys):
    from jobs import summarize

    labelled, unlabelled = str(tmp_path / "a"), str(tmp_path / "b")
    evaluation = {"accuracy": 0.87654, "accuracy_interval": [0.85, 0.9], "macro_f1": 0.8, "macro_f1_interval": None}
    write_run(labelled, "custom_cnn", "completed", evaluation)
    write_run(unlabelled, "mobilenet_v2", "failed", None)
    assert summarize.main([labelled, unlabelled]) == 0
    header, first, second, pair = capsys.readouterr().out.splitlines()
    assert header.split()[:8] == ["model", "status", "rows", "errors", "accuracy", "(95%)", "macro-F1", "(95%)"]
    assert first.split() == [
        "custom_cnn", "completed", "500", "3", "0.8765", "[0.8500,0.9000]", "0.8000", "-", f"{labelled}/predictions"
    ]  # fmt: skip
    assert second.split() == ["mobilenet_v2", "failed", "500", "3", "-", "-", "-", "-", f"{unlabelled}/predictions"]
    assert pair.startswith("custom_cnn - mobilenet_v2 on the same images: macro-F1 - no paired comparison: ")
    assert summarize.main([str(tmp_path / "nothing")]) == 2
    assert "has no run.json" in capsys.readouterr().err


def test_summarize_with_page_writes_the_comparison_and_prints_its_path_last(tmp_path, capsys):
    from jobs import summarize

    labelled, unlabelled = str(tmp_path / "a"), str(tmp_path / "b")
    write_run(labelled, "custom_cnn", "completed", {"accuracy": 0.87654, "macro_f1": 0.8})
    write_run(unlabelled, "mobilenet_v2", "failed", None)
    page = tmp_path / "site" / "index.html"
    assert summarize.main([labelled, unlabelled, "--page", str(page)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"comparison page: {page}"
    text = page.read_text()
    assert '<section data-model="custom_cnn">' in text and '<section data-model="mobilenet_v2">' in text
    assert "failed" in text  # a run without an evaluation is shown with its status, not dropped


@pytest.mark.parametrize("column", ["confidence", "model_version", "image"])
def test_a_manifest_column_that_clashes_with_a_prediction_column_exits_2_naming_it(
    tmp_path, catalog, color_artifact, capsys, column
):
    import pandas as pd

    images = sorted(os.path.join(catalog, "a", name) for name in os.listdir(os.path.join(catalog, "a")))
    pd.DataFrame({"image_uri": images, column: range(len(images))}).to_csv(tmp_path / "m.csv", index=False)
    output = str(tmp_path / "o")
    assert score.main(["--catalog", str(tmp_path / "m.csv"), "--model", color_artifact, "--output", output]) == 2
    assert f"manifest columns ['{column}'] clash with prediction columns; rename them" in capsys.readouterr().err
    assert not ray.is_initialized() and not (tmp_path / "o" / "run.json").exists()


@pytest.mark.parametrize("job", ["score", "train"])
def test_refused_input_leaves_no_output_behind_not_even_the_log(tmp_path, catalog, job, capsys):
    """Bad input exits 2 before any work and writes nothing: the log folder the job made for
    itself goes too, while an output that existed before keeps its log."""
    output = tmp_path / "out"
    if job == "score":
        main, argv = score.main, ["--catalog", catalog, "--model", str(tmp_path / "no-model")]
    else:
        main, argv = train.main, ["--catalog", catalog, "--set", "train.epochs=0"]
    argv += ["--output", str(output)]
    code = main(argv)
    assert code == 2 and "error:" in capsys.readouterr().err
    assert not output.exists()
    output.mkdir()
    code = main(argv)
    assert code == 2 and (output / "logs" / f"{job}.log").exists()


def test_train_refuses_bad_extra_labels_naming_the_rows_before_ray_starts(tmp_path, catalog, capsys):
    labels = tmp_path / "review.csv"
    labels.write_text(f"image_id,image_uri,label\nx.png,{tmp_path / 'x.png'},a\ny.png,{tmp_path / 'y.png'},c\n")
    (tmp_path / "y.png").write_bytes(b"png")
    output = tmp_path / "out"
    argv = ["--catalog", catalog, "--output", str(output), "--set", "train.batch_size_per_worker=2"]
    assert train.main(argv + ["--extra-labels", str(labels)]) == 2
    err = capsys.readouterr().err
    assert "row 2 (x.png): image" in err and "no longer exists" in err
    assert "row 3 (y.png): unknown class 'c'" in err
    assert not ray.is_initialized() and not output.exists()
