"""A scoring driver SIGKILLed part-way resumes on rerun: every row exactly once, work reused."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.conftest import REPO
from tests.factories import make_tree_catalog

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(900)]

SETTINGS = [
    "resources.cpus_per_actor=0.5",
    "predict.batch_size=8",
    "predict.rows_per_file=40",
    "data.rows_per_block=16",
]


def score_process(catalog, artifact, output, *extra):
    command = [sys.executable, "-m", "jobs.score", "--catalog", catalog, "--model", artifact, "--output", output]
    for setting in SETTINGS:
        command += ["--set", setting]
    command += list(extra)
    return subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def kill_after_two_files(victim, pattern):
    """SIGKILLs the job's whole session (its embedded Ray too) once two prediction files exist."""
    deadline = time.time() + 600
    while len(glob.glob(pattern)) < 2:
        assert victim.poll() is None, "the run finished before it could be killed; use a bigger catalog"
        assert time.time() < deadline
        time.sleep(0.2)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()


def test_sigkilled_scoring_run_resumes_with_every_row_exactly_once(tmp_path, color_artifact):
    catalog = make_tree_catalog(str(tmp_path / "catalog"), {"red": 140, "green": 130, "blue": 130})
    clean_output = str(tmp_path / "clean")
    started = time.perf_counter()
    clean = score_process(catalog, color_artifact, clean_output)
    log, _ = clean.communicate(timeout=600)
    clean_seconds = time.perf_counter() - started
    assert clean.returncode == 0, log[-2000:]

    output = str(tmp_path / "killed")
    kill_after_two_files(score_process(catalog, color_artifact, output), f"{output}/predictions/*.parquet")
    assert json.load(open(f"{output}/run.json"))["status"] == "running"  # never looks complete

    started = time.perf_counter()
    rerun = score_process(catalog, color_artifact, output)
    log, _ = rerun.communicate(timeout=600)
    rerun_seconds = time.perf_counter() - started
    assert rerun.returncode == 0, log[-2000:]
    manifest = json.load(open(f"{output}/run.json"))
    frame = pd.concat(pd.read_parquet(p) for p in glob.glob(f"{output}/predictions/*.parquet"))
    assert len(frame) == 400 and frame["image_id"].is_unique
    assert manifest["status"] == "completed" and manifest["counts"]["resumed"] >= 80
    assert manifest["counts"]["resumed"] + manifest["counts"]["scored_this_run"] == 400
    report = {
        "resumed_rows": manifest["counts"]["resumed"],
        "rescored_rows": manifest["counts"]["scored_this_run"],
        "rerun_seconds": round(rerun_seconds, 1),
        "clean_seconds": round(clean_seconds, 1),
    }
    print(f"resume figures: {report}")  # quoted in the issue note; run with -s to see them


def test_a_sigkilled_incremental_night_is_resumed_by_the_next_one_with_every_row_once(tmp_path, color_artifact):
    """A scheduled run SIGKILLed after some prediction files: the old view (none yet) stays
    published, the rerun continues the same run, and the view then holds every image once."""
    import duckdb

    catalog = make_tree_catalog(str(tmp_path / "catalog"), {"red": 140, "green": 130, "blue": 130})
    root = str(tmp_path / "scheduled")
    incremental = ("--set", "predict.incremental=true")
    victim = score_process(catalog, color_artifact, root, *incremental)
    kill_after_two_files(victim, f"{root}/runs/*/predictions/*.parquet")
    assert not os.path.exists(f"{root}/current/current.json")  # nothing half-published
    killed_run = json.load(open(f"{root}/current/pending.json"))["run_id"]

    rerun = score_process(catalog, color_artifact, root, *incremental)
    log, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, log[-2000:]
    view = json.load(open(f"{root}/current/current.json"))
    assert view["runs"] == [killed_run] and view["rows"] == 400  # the killed run was continued
    manifest = json.load(open(f"{root}/runs/{killed_run}/run.json"))
    assert manifest["counts"]["resumed"] >= 80 and manifest["status"] == "completed"
    joined = duckdb.sql(
        f"select count(*), count(distinct image_id) from read_parquet('{root}/runs/*/predictions/*.parquet') p "
        f"join read_parquet('{root}/{view['state']}/*.parquet') s using (image_id, run_id)"
    ).fetchall()[0]
    assert joined == (400, 400)
