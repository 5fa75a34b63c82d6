"""Scoring driver cost per catalog row: the `python -m jobs.score` process alone, as the catalog grows.

Issue 14 asks for a driver that keeps no per-row state. This benchmark runs the public command on
Parquet manifests of N rows (every row its own `image_id`, over a few thousand tiny PNGs reused
across rows) and samples only the driver process, not Ray's workers or daemons: its peak RSS, its
CPU seconds (user + sys, read from the exited process before it is reaped, so the end of the run
counts and its children's time does not), and the wall time. Slopes between the N's, per million
rows, cancel the fixed start-up cost. Each run must write every row exactly once.

With `--s3`, a `<root>/<label>/<prefix>/<key>.png` folder catalog on moto's S3 server (loopback) is scored
too, and every request the run makes to it is counted by method (LIST, HEAD, GET, ...).

What the driver puts into the object store is bounded by what it serializes for Ray: the driver
runs through `benchmarks/driver_probe.py`, which counts every `ray.put` value and task argument.
Ray's state API and `ray memory` cannot give it: they need a running cluster, the job's embedded
one ends with the process, and they do not tell the driver's objects from the workers'.

    python -m benchmarks.scale --rows 50000,250000 --s3 --output benchmarks/results/scale/scale.json
    python -m benchmarks.scale --tiny --output tiny.json      # CI: about 2 minutes
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np

from benchmarks import common, driver_probe
from benchmarks.common import REPO, build_artifact, machine

CLASS_NAMES = ["bag", "boot", "sandal", "sneaker", "trouser"]
TINY = {"rows": "2000,8000", "images": 500, "s3_prefixes": 50, "s3_keys_per_prefix": 4}
# Issue 14's targets, printed beside the figures; the benchmark reports and never fails on a miss.
TARGETS = {
    "driver_peak_rss_mb_per_million_rows": 50.0,
    "driver_cpu_seconds_per_million_rows": 20.0,
    "s3_lists_for_1m_keys_under_1000_prefixes": 1001,
    "s3_heads": 0,
    "no_change_night_wall_seconds": 60.0,
    "no_change_night_driver_cpu_seconds_per_million_rows": 2.0,
    "s3_slow_get_throughput_ratio": 0.8,
}
TICKS = os.sysconf("SC_CLK_TCK")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rows", default="50000,250000", help="comma-separated catalog sizes (default 50000,250000; empty: S3 only)"
    )
    parser.add_argument("--images", type=int, default=2000, help="distinct 32x32 PNGs reused across rows")
    parser.add_argument("--image-size", type=int, default=32, help="model input size (default 32)")
    parser.add_argument("--s3", action="store_true", help="also score a folder catalog on moto S3, counting requests")
    parser.add_argument("--s3-prefixes", type=int, default=1000, help="top-level prefixes of the S3 catalog")
    parser.add_argument("--s3-keys-per-prefix", type=int, default=10, help="images under each S3 prefix")
    parser.add_argument(
        "--kill-at", type=float, default=0.0, help="also SIGKILL a run of the largest size at this share, then rerun"
    )
    parser.add_argument(
        "--incremental", action="store_true", help="also time a no-change incremental night over the largest size"
    )
    parser.add_argument(
        "--s3-get-latency",
        type=float,
        default=0.0,
        help="also score the S3 tree with each image GET delayed this many seconds, against local disk",
    )
    parser.add_argument("--tiny", action="store_true", help="CI smoke run: 2,000 and 8,000 rows, a small S3 catalog")
    parser.add_argument("--output", default="scale.json", help="JSON results file (a .md table is written beside)")
    parser.add_argument("--work-dir", help="keep generated images, manifests and artifacts here and reuse them")
    parser.add_argument("--config", default="local", help="the product's config preset (default local)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override, as in jobs.score"
    )
    return parser


# --------------------------------------------------------------------------- inputs


def make_images(directory: str, count: int, seed: int = 0) -> list[str]:
    """`count` distinct 32x32 PNGs, one colour family per class: tiny, so decoding stays cheap and
    the driver's share of the run is what grows with the catalog."""
    from PIL import Image

    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        path = os.path.join(directory, f"{index:05d}.png")
        base = rng.integers(30, 225, size=3)
        if not os.path.exists(path):
            noise = rng.integers(-25, 25, size=(32, 32, 3))
            Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB").save(path)
        paths.append(path)
    return paths


def write_manifest(path: str, rows: int, images: list[str], seed: int = 0) -> str:
    """A Parquet manifest of `rows` rows with unique ids, reusing `images` in a seeded order."""
    import pandas as pd

    if os.path.exists(path):
        return path
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(images), size=rows)
    frame = pd.DataFrame(
        {
            "image_id": [f"row-{index:08d}" for index in range(rows)],
            "image_uri": np.asarray(images, dtype=object)[picks],
            "label": np.asarray(CLASS_NAMES, dtype=object)[picks % len(CLASS_NAMES)],
        }
    )
    frame.to_parquet(path + ".tmp", index=False)
    os.replace(path + ".tmp", path)
    return path


def make_model(directory: str, image_size: int, class_names: list[str]) -> str:
    """A random-weight custom_cnn artifact: inference costs the same as a trained one."""
    probe = np.random.default_rng(0).uniform(0, 255, size=(8, image_size, image_size, 3))
    build_artifact(directory, "custom_cnn", image_size, class_names, probe)
    return directory


# --------------------------------------------------------------------------- the driver process


class DriverSampler:
    """Samples one process (not its children): peak RSS from the kernel's high-water mark, CPU
    from /proc/<pid>/stat. `finish` reads the exited process before it is reaped, so its last
    CPU seconds count, and its children's (Ray's daemons) are in other fields and never do."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.pid, self.interval = pid, interval
        self.peak_rss_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="driver-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with open(f"/proc/{self.pid}/status") as handle:
                    for line in handle:
                        if line.startswith("VmHWM:"):
                            self.peak_rss_kb = max(self.peak_rss_kb, int(line.split()[1]))
            except (FileNotFoundError, ProcessLookupError):
                return
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread.start()

    def finish(self) -> dict[str, float]:
        """Waits for the process to exit (without reaping it) and returns its own CPU seconds."""
        os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
        self._stop.set()
        self._thread.join()
        with open(f"/proc/{self.pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        user, system = int(fields[11]) / TICKS, int(fields[12]) / TICKS
        return {"driver_user_seconds": round(user, 2), "driver_system_seconds": round(system, 2)}


def score_command(
    catalog: str, model: str, output: str, args: argparse.Namespace, fresh: bool = True, *settings: str
) -> list[str]:
    """The public command, on an empty output unless `fresh` is false: an unfinished run left
    there would be resumed, and a resumed run scores only the rows it lacks."""
    if fresh:
        shutil.rmtree(output, ignore_errors=True)
    command = [sys.executable, "-m", "jobs.score", "--catalog", catalog, "--model", model, "--output", output]
    command += ["--config", args.config]
    for setting in ("predict.overwrite=true",) * fresh + settings:
        command += ["--set", setting]
    for override in args.set:
        command += ["--set", override]
    return command


def driver_env(extra_env: dict[str, str] | None = None) -> dict[str, str]:
    """The driver's environment: its own embedded Ray (RAY_ADDRESS unset)."""
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra_env or {})
    return env


def probed(command: list[str]) -> list[str]:
    """`python -m jobs.score ...` run through `benchmarks.driver_probe`, in the same process."""
    assert command[1] == "-m", command
    return [command[0], "-m", "benchmarks.driver_probe", *command[2:]]


def serialized(probe_path: str) -> dict[str, float]:
    """What the driver handed to Ray (benchmarks/driver_probe.py), or nothing if it never exited cleanly."""
    if not os.path.exists(probe_path):
        return {}
    with open(probe_path) as handle:
        totals = json.load(handle)
    return {
        "driver_serialized_mb": round(totals["serialized_bytes"] / 2**20, 2),
        "driver_serialized_values": totals["serialized_values"],
    }


def run_driver(command: list[str], log_path: str, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """Runs the scoring command as its own process and samples it."""
    probe_path = log_path + ".probe.json"
    env = driver_env({**(extra_env or {}), driver_probe.ENV: probe_path})
    with open(log_path, "w") as log:
        started = time.perf_counter()
        process = subprocess.Popen(probed(command), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        sampler = DriverSampler(process.pid)
        sampler.start()
        cpu = sampler.finish()
        seconds = time.perf_counter() - started
        code = process.wait()
    if code != 0:
        with open(log_path) as log:
            common.log("scale", f"exit {code}; log {log_path}:\n{log.read()[-3000:]}")
    return {
        "exit_code": code,
        "wall_seconds": round(seconds, 2),
        "driver_peak_rss_mb": round(sampler.peak_rss_kb / 1024, 1),
        "driver_cpu_seconds": round(cpu["driver_user_seconds"] + cpu["driver_system_seconds"], 2),
        **cpu,
        **serialized(probe_path),
        "log": log_path,
    }


def rows_written(output: str) -> dict[str, int]:
    """Counts the prediction rows actually on disk, independently of the job's own run.json."""
    import pyarrow.dataset as ds

    directory = os.path.join(output, "predictions")
    if not os.path.isdir(directory):
        return {"rows_out": 0, "unique_ids_out": 0}
    ids = ds.dataset(directory, format="parquet").to_table(columns=["image_id"]).column("image_id")
    return {"rows_out": len(ids), "unique_ids_out": len(ids.unique())}


# --------------------------------------------------------------------------- scenarios


def local_scenario(args: argparse.Namespace, work: str, model: str) -> list[dict[str, Any]]:
    """One scoring run per catalog size, smallest first, on the same images and model."""
    images = make_images(os.path.join(work, "images"), args.images)
    runs = []
    for rows in sorted(int(value) for value in args.rows.split(",") if value.strip()):
        manifest = write_manifest(os.path.join(work, f"manifest-{rows}.parquet"), rows, images)
        output = os.path.join(work, f"out-{rows}")
        log(f"scoring {rows:,} rows")
        run = {"rows_in": rows, **run_driver(score_command(manifest, model, output, args), output + ".log")}
        run.update(rows_written(output))
        run["rows_lost"] = rows != run["rows_out"] or rows != run["unique_ids_out"]
        log(
            f"{rows:,} rows: {run['wall_seconds']} s wall, driver {run['driver_cpu_seconds']} CPU-s, "
            f"peak RSS {run['driver_peak_rss_mb']} MB, {run['rows_out']:,} rows out"
        )
        runs.append(run)
    return runs


def slopes(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Least-squares slopes per million rows over the runs (two runs: the line through both),
    so the fixed start-up cost of Ray, TensorFlow and the model cancels."""
    if len(runs) < 2:
        return {}
    rows = np.array([run["rows_in"] for run in runs], dtype=float) / 1e6
    result = {}
    for key, name in (
        ("driver_peak_rss_mb", "driver_peak_rss_mb_per_million_rows"),
        ("driver_cpu_seconds", "driver_cpu_seconds_per_million_rows"),
        ("driver_serialized_mb", "driver_serialized_mb_per_million_rows"),
        ("wall_seconds", "wall_seconds_per_million_rows"),
    ):
        if not all(key in run for run in runs):
            continue
        values = np.array([run[key] for run in runs], dtype=float)
        result[name] = round(float(np.polyfit(rows, values, 1)[0]), 1)
    return result


def log(message: str) -> None:
    common.log("scale", message)


class CountingMotoServer:
    """moto's S3 server on loopback behind a WSGI wrapper that records every request's method,
    kind and key, the way the server sees them: no client or product code is touched."""

    def __init__(self, get_latency: float = 0.0) -> None:
        self.get_latency = get_latency  # seconds before answering each image GET, as a far S3 would
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()

    def _count(self, app):
        def counted(environ, start_response):
            method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
            query = environ.get("QUERY_STRING", "")
            kind = request_kind(method, path, query)
            with self._lock:
                self.requests.append((kind, path))
            if kind == "GET" and path.endswith(".png") and self.get_latency:
                time.sleep(self.get_latency)
            return app(environ, start_response)

        return counted

    def _serve(self) -> None:
        from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
        app = self._count(DomainDispatcherApplication(create_backend_app))
        self._server = make_server("127.0.0.1", 0, app, True, request_handler=MotoRequestHandler)
        self._ready.set()
        self._server.serve_forever()

    def start(self) -> str:
        self._thread = threading.Thread(target=self._serve, name="moto", daemon=True)
        self._thread.start()
        self._ready.wait()
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join()

    def take(self) -> list[tuple[str, str]]:
        with self._lock:
            taken, self.requests = self.requests, []
        return taken


def request_kind(method: str, path: str, query: str) -> str:
    """LIST, HEAD, GET, PUT, ... as S3 bills them; path-style addressing (`/<bucket>/<key>`)."""
    has_key = len(path.strip("/").split("/", 1)) > 1
    if method == "GET" and not has_key:
        return "LIST" if "location" not in query else "GET_BUCKET_LOCATION"
    if method == "HEAD":
        return "HEAD" if has_key else "HEAD_BUCKET"
    return method


def tree_keys(images: list[str], args: argparse.Namespace) -> list[tuple[str, bytes]]:
    blobs = [open(path, "rb").read() for path in images]
    return [
        (f"catalog/{prefix_name(prefix)}/{key:05d}.png", blobs[(prefix * args.s3_keys_per_prefix + key) % len(blobs)])
        for prefix in range(args.s3_prefixes)
        for key in range(args.s3_keys_per_prefix)
    ]


def upload_tree(endpoint: str, env: dict[str, str], bucket: str, images: list[str], args: argparse.Namespace) -> int:
    """`<catalog>/<label>/<shard>/<key>.png`: the issue's prefixes are the shards, spread over the
    model's few labels. Not one label per prefix: evaluating 1,000 classes costs the driver far more
    than listing does (above 9 GB RSS at 10,000 rows before the scale work), and hides the count."""
    from concurrent.futures import ThreadPoolExecutor

    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    client.create_bucket(Bucket=bucket)
    keys = tree_keys(images, args)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda item: client.put_object(Bucket=bucket, Key=item[0], Body=item[1]), keys))
    return len(keys)


def prefix_name(index: int) -> str:
    return f"{CLASS_NAMES[index % len(CLASS_NAMES)]}/s{index:04d}"


def s3_scenario(args: argparse.Namespace, work: str, model: str, get_latency: float = 0.0) -> dict[str, Any]:
    """Scores the S3 folder catalog (model and output stay local) and counts the run's requests."""
    images = make_images(os.path.join(work, "images"), args.images)
    server = CountingMotoServer(get_latency)
    endpoint = server.start()
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "benchmark-key",
        "AWS_SECRET_ACCESS_KEY": "benchmark-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    try:
        log(f"uploading {args.s3_prefixes} prefixes x {args.s3_keys_per_prefix} keys to moto")
        keys = upload_tree(endpoint, env, "scale-bench", images, args)
        server.take()
        output = os.path.join(work, f"out-s3-{get_latency}")
        log(f"scoring s3://scale-bench/catalog ({keys:,} keys)")
        run = run_driver(score_command("s3://scale-bench/catalog", model, output, args), output + ".log", env)
        requests = server.take()
    finally:
        server.stop()
    run.update(rows_written(output))
    run["rows_lost"] = keys != run["rows_out"] or keys != run["unique_ids_out"]
    run["images_per_second"] = run_figures(output)["images_per_second"]
    return {"prefixes": args.s3_prefixes, "keys": keys, "rows_in": keys, **run, **request_counts(requests, keys)}


def latency_scenario(args: argparse.Namespace, work: str, model: str) -> dict[str, Any]:
    """The S3 folder catalog with every image GET answered after `--s3-get-latency` seconds,
    against the same tree on local disk: the throughput ratio shows whether fetching overlaps."""
    images = make_images(os.path.join(work, "images"), args.images)
    root = os.path.join(work, "tree")
    for key, blob in tree_keys(images, args):
        path = os.path.join(root, key)
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as handle:
                handle.write(blob)
    output = os.path.join(work, "out-tree-local")
    log(f"scoring the same tree from local disk ({root}/catalog)")
    local = run_driver(score_command(os.path.join(root, "catalog"), model, output, args), output + ".log")
    local["images_per_second"] = run_figures(output)["images_per_second"]
    slow = s3_scenario(args, work, model, args.s3_get_latency)
    ratio = slow["images_per_second"] / local["images_per_second"] if local["images_per_second"] else None
    return {
        "get_latency_seconds": args.s3_get_latency,
        "local": local,
        "s3": slow,
        "throughput_ratio": round(ratio, 3) if ratio else None,
    }


def request_counts(requests: list[tuple[str, str]], keys: int) -> dict[str, Any]:
    """Counts by kind, for the whole run and for the listing phase (before any image is opened)."""
    first_read = next(
        (index for index, (kind, path) in enumerate(requests) if kind in ("GET", "HEAD") and path.endswith(".png")),
        len(requests),
    )
    totals: dict[str, int] = {}
    listing: dict[str, int] = {}
    for index, (kind, _) in enumerate(requests):
        totals[kind] = totals.get(kind, 0) + 1
        if index < first_read:
            listing[kind] = listing.get(kind, 0) + 1
    return {
        "requests": totals,
        "requests_before_first_image_read": listing,
        "lists": totals.get("LIST", 0),
        "heads": totals.get("HEAD", 0) + totals.get("HEAD_BUCKET", 0),
        "lists_needed_by_one_flat_listing": -(-keys // 1000),
    }


def run_figures(output: str) -> dict[str, Any]:
    """What the job's own run.json says: counts and its throughput over the scoring phase."""
    import json

    with open(os.path.join(output, "run.json")) as handle:
        manifest = json.load(handle)
    return {
        "status": manifest["status"],
        "counts": manifest.get("counts"),
        "images_per_second": (manifest.get("timings") or {}).get("images_per_second"),
    }


def duckdb_counts(directory: str) -> dict[str, int]:
    """`count(*)` and `count(distinct image_id)` over the prediction files, by DuckDB."""
    import duckdb

    ((total, distinct),) = duckdb.sql(
        f"SELECT count(*), count(DISTINCT image_id) FROM read_parquet('{directory}/*.parquet')"
    ).fetchall()
    return {"duckdb_count": int(total), "duckdb_count_distinct": int(distinct)}


def rows_on_disk(directory: str, seen: dict[str, int]) -> int:
    """Rows in the committed prediction files, reading each new file's footer once."""
    import pyarrow.parquet as pq

    if os.path.isdir(directory):
        for name in os.listdir(directory):
            if name.endswith(".parquet") and name not in seen:
                seen[name] = pq.read_metadata(os.path.join(directory, name)).num_rows
    return sum(seen.values())


def kill_scenario(args: argparse.Namespace, work: str, model: str, rows: int) -> dict[str, Any]:
    """SIGKILLs the driver's whole process group (its embedded Ray too) once `--kill-at` of the
    rows are in files, then reruns the same command into the same output, which resumes."""
    import signal

    images = make_images(os.path.join(work, "images"), args.images)
    manifest = write_manifest(os.path.join(work, f"manifest-{rows}.parquet"), rows, images)
    output = os.path.join(work, f"out-kill-{rows}")
    directory = os.path.join(output, "predictions")
    log(f"scoring {rows:,} rows, to be killed at {args.kill_at:.0%}")
    with open(output + "-killed.log", "w") as killed_log:
        victim = subprocess.Popen(
            score_command(manifest, model, output, args),
            cwd=REPO,
            env=driver_env(),
            stdout=killed_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        seen: dict[str, int] = {}
        while rows_on_disk(directory, seen) < args.kill_at * rows and victim.poll() is None:
            time.sleep(0.5)
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
    at_kill = rows_on_disk(directory, seen)
    log(f"killed with {at_kill:,} rows in {len(seen)} files; rerunning")
    rerun = run_driver(score_command(manifest, model, output, args, False), output + "-rerun.log")
    figures = run_figures(output)
    counts = figures["counts"] or {}
    return {
        "rows_in": rows,
        "rows_in_files_at_kill": at_kill,
        "largest_file_rows": max(seen.values(), default=0),
        "rerun": rerun,
        **figures,
        # Rows the rerun found in files beyond those seen at the kill were written in the moments
        # between the last poll and the kill; scored twice are only rows in blocks in flight.
        "resumed": counts.get("resumed"),
        "scored_by_rerun": counts.get("scored_this_run"),
        **duckdb_counts(directory),
    }


def incremental_scenario(args: argparse.Namespace, work: str, model: str, rows: int) -> dict[str, Any]:
    """Two scheduled (incremental) runs over the same manifest: the first scores everything, the
    second finds nothing new or changed. The second is the no-change night the issue times."""
    images = make_images(os.path.join(work, "images"), args.images)
    manifest = write_manifest(os.path.join(work, f"manifest-{rows}.parquet"), rows, images)
    root = os.path.join(work, f"scheduled-{rows}")
    shutil.rmtree(root, ignore_errors=True)
    nights = []
    for night in ("first", "no_change"):
        log(f"incremental night '{night}' over {rows:,} rows")
        command = score_command(manifest, model, root, args, False, "predict.incremental=true")
        nights.append(run_driver(command, os.path.join(work, f"scheduled-{rows}-{night}.log")))
    import json

    with open(os.path.join(root, "current", "current.json")) as handle:
        view = json.load(handle)
    return {"rows_in": rows, "first": nights[0], "no_change": nights[1], "view_rows": view.get("rows")}


# --------------------------------------------------------------------------- report


def verdicts(figures: dict[str, Any], s3: dict[str, Any] | None) -> dict[str, Any]:
    """Each figure beside its target from issue 14 (met / missed): a report, never a failure."""
    checks = {}
    for name in ("driver_peak_rss_mb_per_million_rows", "driver_cpu_seconds_per_million_rows"):
        if name in figures:
            checks[name] = {"value": figures[name], "target": TARGETS[name], "met": figures[name] <= TARGETS[name]}
    if s3:
        # The bound (1,001 LISTs for 1M keys under 1,000 prefixes) is one LIST per prefix,
        # or one per 1,000-key page, plus one: the larger of the two for the catalog run here.
        bound = max(s3["prefixes"], s3["lists_needed_by_one_flat_listing"]) + 1
        checks["s3_lists"] = {"value": s3["lists"], "target": bound, "met": s3["lists"] <= bound}
        checks["s3_heads"] = {"value": s3["heads"], "target": 0, "met": s3["heads"] == 0}
    return checks


def scenario_verdicts(results: dict[str, Any]) -> dict[str, Any]:
    """The kill, no-change night and slow-S3 figures beside their targets."""
    checks: dict[str, Any] = {}
    night = results.get("incremental")
    if night:
        wall = night["no_change"]["wall_seconds"]
        cpu = round(night["no_change"]["driver_cpu_seconds"] / (night["rows_in"] / 1e6), 2)
        for name, value in (
            ("no_change_night_wall_seconds", wall),
            ("no_change_night_driver_cpu_seconds_per_million_rows", cpu),
        ):
            checks[name] = {"value": value, "target": TARGETS[name], "met": value <= TARGETS[name]}
    kill = results.get("kill")
    if kill:
        exact = kill["duckdb_count"] == kill["duckdb_count_distinct"] == kill["rows_in"]
        checks["killed_run_rows_exactly_once"] = {
            "value": kill["duckdb_count"],
            "target": kill["rows_in"],
            "met": exact,
        }
    latency = results.get("latency")
    if latency and latency["throughput_ratio"] is not None:
        name = "s3_slow_get_throughput_ratio"
        ratio = latency["throughput_ratio"]
        checks[name] = {"value": ratio, "target": TARGETS[name], "met": ratio >= TARGETS[name]}
    return checks


def markdown(results: dict[str, Any]) -> str:
    """A short table for benchmarks/results and the README."""
    lines = [
        f"Driver cost of `python -m jobs.score` ({results['settings']['config']} preset, "
        f"custom_cnn {results['settings']['image_size']} px, {results['settings']['images']:,} distinct PNGs):",
        "",
        f"Load average (1 min) {results['machine']['load_average'][0]} at start, "
        f"{results['machine'].get('load_average_end', ['?'])[0]} at end, on {results['machine']['cpus']} cores: "
        "wall times move with it, the driver's own CPU seconds and peak RSS much less.",
        "",
        "| rows | wall s | driver CPU s | driver peak RSS MB | driver → Ray MB | rows out |",
        "|---|---|---|---|---|---|",
    ]
    for run in results["runs"]:
        lines.append(
            f"| {run['rows_in']:,} | {run['wall_seconds']} | {run['driver_cpu_seconds']} | "
            f"{run['driver_peak_rss_mb']} | {run.get('driver_serialized_mb', '-')} | {run['rows_out']:,} |"
        )
    lines += [
        "",
        "driver → Ray: the serialized size of every `ray.put` value and task argument the driver sent "
        "(benchmarks/driver_probe.py), an upper bound on the bytes it put into the object store.",
    ]
    lines += ["", "| per million rows (slope) | measured | target |", "|---|---|---|"]
    for name, value in results["slopes"].items():
        check = results["targets"].get(name)
        lines.append(f"| {name} | {value} | {'≤ ' + str(check['target']) if check else ''} |")
    s3 = results.get("s3")
    if s3:
        lines += [
            "",
            f"S3 folder catalog, {s3['prefixes']:,} prefixes, {s3['keys']:,} keys: "
            f"**{s3['lists']} LISTs** (target ≤ {results['targets']['s3_lists']['target']}), "
            f"**{s3['heads']} HEADs** (target 0); all requests {s3['requests']}; "
            f"before the first image read {s3['requests_before_first_image_read']}; "
            f"wall {s3['wall_seconds']} s, driver {s3['driver_cpu_seconds']} CPU-s, "
            f"peak RSS {s3['driver_peak_rss_mb']} MB, rows out {s3['rows_out']:,}.",
        ]
    extra = {key: check for key, check in results["targets"].items() if key not in results["slopes"]}
    if extra:
        lines += ["", "| scenario figure | measured | target | |", "|---|---|---|---|"]
        for name, check in extra.items():
            lines.append(f"| {name} | {check['value']} | {check['target']} | {'met' if check['met'] else 'missed'} |")
    return "\n".join(lines) + "\n"


def summary_line(results: dict[str, Any]) -> str:
    parts = [
        f"{name} {check['value']} (target {'≤ ' if check['target'] else ''}{check['target']}: "
        f"{'met' if check['met'] else 'MISSED'})"
        for name, check in results["targets"].items()
    ]
    runs = ", ".join(f"{run['rows_in']:,} rows {run['wall_seconds']} s" for run in results["runs"])
    return f"scale: {runs} | " + " | ".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.tiny:
        args.rows, args.images, args.s3 = TINY["rows"], TINY["images"], True
        args.s3_prefixes, args.s3_keys_per_prefix = TINY["s3_prefixes"], TINY["s3_keys_per_prefix"]
    with common.work_directory("scale", args.work_dir) as work:
        started = time.perf_counter()
        model = make_model(os.path.join(work, "model"), args.image_size, CLASS_NAMES)
        results: dict[str, Any] = {
            "benchmark": "scale",
            "machine": machine(),
            "settings": {
                "rows": args.rows,
                "images": args.images,
                "image_size": args.image_size,
                "model": "custom_cnn (random weights)",
                "config": args.config,
                "overrides": args.set,
                "tiny": args.tiny,
            },
            "runs": local_scenario(args, work, model),
        }
        results["slopes"] = slopes(results["runs"])
        if args.s3:
            results["s3"] = s3_scenario(args, work, model)
        largest = max((int(value) for value in args.rows.split(",") if value.strip()), default=0)
        if args.kill_at and largest:
            results["kill"] = kill_scenario(args, work, model, largest)
        if args.incremental and largest:
            results["incremental"] = incremental_scenario(args, work, model, largest)
        if args.s3_get_latency:
            results["latency"] = latency_scenario(args, work, model)
        results["targets"] = {**verdicts(results["slopes"], results.get("s3")), **scenario_verdicts(results)}
        results["summary"] = summary_line(results)
        common.finish(results, started, args.output)
        with open(os.path.splitext(args.output)[0] + ".md", "w") as handle:
            handle.write(markdown(results))
    scenarios = results["runs"] + ([results["s3"]] if args.s3 else [])
    failed = [run for run in scenarios if run["exit_code"] != 0 or run["rows_lost"]]
    kill_check = results["targets"].get("killed_run_rows_exactly_once")
    return 1 if failed or (kill_check and not kill_check["met"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
