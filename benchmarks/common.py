"""Shared benchmark plumbing: test images, untrained model artifacts, process-tree monitoring.

Benchmarks generate everything they need (images, artifacts) so they run on a fresh checkout
without network or files outside the repository; what they measure is throughput, not accuracy, so the models
are randomly initialised.
"""

from __future__ import annotations

import glob
import io
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from typing import TYPE_CHECKING, Any

import numpy as np
import psutil

if TYPE_CHECKING:
    from pipeline.records import ModelCard

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPLETE_MARKER = ".complete"


# --------------------------------------------------------------------------- images


def _shapes() -> list[tuple[str, np.ndarray]]:
    """Product silhouettes with their class: the shipped Fashion-MNIST catalog when present, else
    drawn ellipses and boxes (the benchmark must run from a bare checkout too)."""
    from PIL import Image

    paths = sorted(glob.glob(os.path.join(REPO, "data", "sample_catalog", "*", "*.png")))[::7]
    if paths:
        return [
            (
                os.path.basename(os.path.dirname(path)),
                np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0,
            )
            for path in paths
        ]
    yy, xx = np.mgrid[-1:1:28j, -1:1:28j]
    drawn = [
        (f"ellipse{a}{b}", ((xx / a) ** 2 + (yy / b) ** 2 < 1).astype(np.float32) * 0.8)
        for a, b in ((0.9, 0.6), (0.5, 0.9), (0.8, 0.8))
    ]
    return drawn + [("box", ((abs(xx) < 0.7) & (abs(yy) < 0.5)).astype(np.float32))]


_SHAPES: list[tuple[str, np.ndarray]] | None = None


def shape_labels() -> list[str]:
    """The classes `product_photo(label=...)` can draw."""
    global _SHAPES
    if _SHAPES is None:
        _SHAPES = _shapes()
    return sorted({label for label, _ in _SHAPES})


def product_photo(index: int, size: int = 600, seed: int = 0, quality: int = 90, label: str | None = None) -> bytes:
    """One JPEG that compresses like a catalog photo (≈50-150 kB at 600 px, quality 90).

    A silhouette with its own shading, filled with a colour gradient and fabric-like grain,
    on an off-white studio background with a soft shadow. Pure noise would be far larger and
    flat colour far smaller than real photos, and JPEG decode time depends on that size.
    `label` picks a silhouette of that class, so a labelled catalog is learnable.
    """
    from PIL import Image, ImageFilter

    shape_labels()
    candidates = [mask for name, mask in _SHAPES if label is None or name == label]
    shape = candidates[index % len(candidates)]
    rng = np.random.default_rng((seed, index))
    mask = Image.fromarray((shape * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
    mask = mask.rotate(float(rng.uniform(-12, 12)), resample=Image.Resampling.BILINEAR)
    shading = np.asarray(mask, dtype=np.float32) / 255.0
    alpha = np.clip(shading * 4.0, 0.0, 1.0)[..., None]
    axis = np.arange(size, dtype=np.float32) / size
    xx, yy = axis[None, :], axis[:, None]
    direction = rng.uniform(-1, 1, 2).astype(np.float32)
    ramp = xx * direction[0] + yy * direction[1]
    ramp = ((ramp - ramp.min()) / (np.ptp(ramp) + 1e-6))[..., None]
    start, end = rng.uniform(20, 230, 3).astype(np.float32), rng.uniform(20, 230, 3).astype(np.float32)
    colour = start + (end - start) * ramp
    grain = rng.standard_normal((size, size, 1), dtype=np.float32) * np.float32(rng.uniform(9, 13))
    weave = (np.sin(xx * rng.uniform(120, 260)) * np.sin(yy * rng.uniform(120, 260)) * 6).astype(np.float32)
    product = colour * (0.55 + 0.45 * shading[..., None]) + (grain + weave[..., None])
    shadow = np.asarray(mask.filter(ImageFilter.GaussianBlur(18)), dtype=np.float32)[..., None] / 255.0
    background = (
        246.0
        - 40.0 * np.roll(shadow, (12, 10), axis=(0, 1))
        + rng.standard_normal((size, size, 1), dtype=np.float32) * 1.5
    )
    pixels = np.clip(product * alpha + background * (1 - alpha), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _write_range(directory: str, start: int, stop: int, size: int, seed: int) -> int:
    written = 0
    for index in range(start, stop):
        data = product_photo(index, size, seed)
        with open(os.path.join(directory, f"{index:06d}.jpg"), "wb") as handle:
            handle.write(data)
        written += len(data)
    return written


def make_photo_catalog(
    directory: str, count: int, size: int = 600, seed: int = 0, processes: int | None = None
) -> dict[str, Any]:
    """Writes `count` product-photo JPEGs into a flat (unlabelled) folder, reusing a finished one.

    A flat folder is what a user scores in production (no labels), so the product's scoring job
    skips evaluation exactly as it would there.

    Returns:
        {"directory", "count", "mean_kb", "min_kb", "max_kb", "pixels"}.
    """
    marker = os.path.join(directory, COMPLETE_MARKER)
    if os.path.exists(marker):
        with open(marker) as handle:
            info = json.load(handle)
        if info.get("count") == count and info.get("pixels") == size and info.get("seed") == seed:
            return info
    os.makedirs(directory, exist_ok=True)
    for stale in glob.glob(os.path.join(directory, "*.jpg")):
        os.remove(stale)
    processes = processes or max(1, os.cpu_count() or 1)
    step = max(1, -(-count // (processes * 4)))
    # spawn, not fork: the caller may already hold TensorFlow or Ray threads.
    with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
        list(
            pool.map(
                _write_range,
                *zip(*[(directory, start, min(count, start + step), size, seed) for start in range(0, count, step)]),
            )
        )
    sizes = np.array([os.path.getsize(path) for path in glob.glob(os.path.join(directory, "*.jpg"))]) / 1000
    info = {
        "directory": directory,
        "count": count,
        "pixels": size,
        "seed": seed,
        "mean_kb": round(float(sizes.mean()), 1),
        "min_kb": round(float(sizes.min()), 1),
        "max_kb": round(float(sizes.max()), 1),
    }
    with open(marker, "w") as handle:
        json.dump(info, handle)
    return info


def _write_labelled(directory: str, label: str, start: int, stop: int, size: int, seed: int) -> None:
    os.makedirs(os.path.join(directory, label), exist_ok=True)
    for index in range(start, stop):
        with open(os.path.join(directory, label, f"{index:05d}.jpg"), "wb") as handle:
            handle.write(product_photo(index, size, seed, label=label))


def make_labelled_catalog(directory: str, per_class: int, size: int = 256, seed: int = 0) -> dict[str, Any]:
    """Writes a balanced `<root>/<label>/<n>.jpg` training catalog, one silhouette family per class.

    Balanced, so class weights are ~1 and a plain Keras loop without them trains the same problem.
    """
    marker = os.path.join(directory, COMPLETE_MARKER)
    labels = shape_labels()
    info = {"directory": directory, "per_class": per_class, "classes": labels, "pixels": size, "seed": seed}
    if os.path.exists(marker):
        with open(marker) as handle:
            if json.load(handle) == info:
                return info
    shutil.rmtree(directory, ignore_errors=True)
    jobs = [
        (directory, label, start, min(per_class, start + 50), size, seed)
        for label in labels
        for start in range(0, per_class, 50)
    ]
    with ProcessPoolExecutor(max(1, os.cpu_count() or 1), mp_context=get_context("spawn")) as pool:
        list(pool.map(_write_labelled, *zip(*jobs)))
    with open(marker, "w") as handle:
        json.dump(info, handle)
    return info


def image_paths(directory: str) -> list[str]:
    return sorted(glob.glob(os.path.join(directory, "*.jpg")))


# --------------------------------------------------------------------------- artifacts


def build_artifact(
    directory: str, model_name: str, image_size: int, class_names: list[str], probe: np.ndarray, seed: int = 0
) -> ModelCard:
    """An untrained model artifact (model.keras, model.onnx when it verifies, model_card.json).

    Random weights cost exactly what trained ones do at inference, and building one takes seconds
    where training takes minutes; an existing artifact in `directory` is reused.

    Returns:
        The model card.
    """
    from models import build_model, get_entry
    from pipeline.artifacts import CARD_FILE, content_version, read_card, write_card
    from pipeline.engines import export_onnx
    from pipeline.records import ModelCard

    if os.path.exists(os.path.join(directory, CARD_FILE)):
        existing = read_card(directory)
        if existing.name == model_name and existing.input.image_size == image_size:
            return existing
    import keras

    keras.utils.set_random_seed(seed)
    entry = get_entry(model_name)
    model = build_model(model_name, len(class_names), image_size, **({"weights": None} if entry.takes_weights else {}))
    os.makedirs(directory, exist_ok=True)
    model_path = os.path.join(directory, "model.keras")
    model.save(model_path)
    card = ModelCard(
        name=model_name,
        version=content_version(model_path),
        class_names=tuple(class_names),
        input=entry.input_spec(image_size),
        weights_source="none (random initialisation, benchmark artifact)",
        onnx=export_onnx(model, directory, probe.astype(np.float32)),
    )
    write_card(directory, card)
    return card


# --------------------------------------------------------------------------- monitoring


class TreeMonitor:
    """Samples a process and all its descendants in a background thread.

    Peak memory is the largest *sum* over the tree at one instant: RSS (what the issue asks for;
    it counts pages shared between processes, such as Ray's object store, once per process) and
    PSS (shared pages split between their users, so the sum is the real footprint; sampled less
    often because it costs more to read). CPU seconds are summed per process from the last
    sample, so processes that exit mid-run still count; `other_cpu_share` is the part of the
    machine's busy time not spent in the tree, i.e. how contaminated the measurement is.
    """

    def __init__(self, pid: int | None = None, interval: float = 0.5, pss_every: int = 4):
        self.root = psutil.Process(pid or os.getpid())
        self.interval, self.pss_every = interval, pss_every
        self.peak_rss = self.peak_pss = 0
        self.rss_at_peak: dict[str, int] = {}
        self.cpu: dict[tuple[int, float], float] = {}
        self.names: dict[tuple[int, float], str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-monitor", daemon=True)
        self._processes: dict[int, psutil.Process] = {}

    def _tree(self) -> list[psutil.Process]:
        try:
            members = [self.root] + self.root.children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        # Keep one Process object per pid: psutil caches create_time, which tells reused pids apart.
        alive = {}
        for process in members:
            alive[process.pid] = self._processes.get(process.pid, process)
        self._processes = alive
        return list(alive.values())

    def sample(self, with_pss: bool) -> None:
        rss = pss = 0
        by_role: dict[str, int] = {}
        for process in self._tree():
            try:
                with process.oneshot():
                    resident = process.memory_info().rss
                    times = process.cpu_times()
                    key = (process.pid, process.create_time())
                    self.cpu[key] = times.user + times.system
                    # Ray workers retitle themselves (ray::IDLE → ray::MapWorker…): keep the last real title.
                    role = _role(process)
                    if key not in self.names or role != "ray::IDLE":
                        self.names[key] = role
                    if with_pss:
                        pss += process.memory_full_info().pss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            rss += resident
            by_role[self.names[key]] = by_role.get(self.names[key], 0) + resident
        if rss > self.peak_rss:
            self.peak_rss, self.rss_at_peak = rss, by_role
        if with_pss:
            self.peak_pss = max(self.peak_pss, pss)

    def _run(self) -> None:
        tick = 0
        while not self._stop.is_set():
            self.sample(with_pss=tick % self.pss_every == 0)
            tick += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeMonitor:
        self._cpu_before = psutil.cpu_times()
        self._started = time.perf_counter()
        self.sample(with_pss=True)
        self._cpu_start = dict(self.cpu)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        self.sample(with_pss=True)
        self.wall = time.perf_counter() - self._started
        after = psutil.cpu_times()
        idle = lambda t: t.idle + getattr(t, "iowait", 0.0)  # noqa: E731
        self._machine_busy = (sum(after) - idle(after)) - (sum(self._cpu_before) - idle(self._cpu_before))

    def result(self) -> dict[str, Any]:
        used = {key: value - self._cpu_start.get(key, 0.0) for key, value in self.cpu.items()}
        tree_cpu = sum(used.values())
        by_role: dict[str, float] = {}
        for key, value in used.items():
            by_role[self.names.get(key, "?")] = by_role.get(self.names.get(key, "?"), 0.0) + value
        top = dict(
            sorted(
                ((role, round(value, 2)) for role, value in by_role.items() if value >= 0.05), key=lambda item: -item[1]
            )
        )
        capacity = self.wall * (os.cpu_count() or 1)
        return {
            "peak_rss_mb": round(self.peak_rss / 2**20, 1),
            "peak_pss_mb": round(self.peak_pss / 2**20, 1),
            "rss_mb_by_process_at_peak": {
                role: round(value / 2**20)
                for role, value in sorted(self.rss_at_peak.items(), key=lambda item: -item[1])
            },
            "tree_cpu_seconds": round(tree_cpu, 2),
            "cpu_seconds_by_process": top,
            "other_cpu_share": round(max(0.0, self._machine_busy - tree_cpu) / capacity, 3) if capacity else None,
        }


def wait_for_quiet(max_seconds: float, busy_below: float = 0.25, window: float = 3.0) -> dict[str, Any]:
    """Waits (up to `max_seconds`) until the machine is mostly idle before a measurement.

    On a shared box other jobs come and go; starting each phase in a quiet spell keeps the
    comparisons fair. Call it while this process is idle: its own use counts as busy.

    Returns:
        {"waited_seconds", "busy_share"} of the last window sampled.
    """
    started = time.perf_counter()
    busy = psutil.cpu_percent(interval=min(window, max_seconds) if max_seconds > 0 else 0.5) / 100
    while busy >= busy_below and time.perf_counter() - started + window <= max_seconds:
        busy = psutil.cpu_percent(interval=window) / 100
    return {"waited_seconds": round(time.perf_counter() - started, 1), "busy_share": round(busy, 3)}


def settle(max_seconds: float = 15.0, busy_below: float = 0.1) -> float:
    """Waits until this process tree goes idle, e.g. after `ray.init()` while Ray still starts
    its prestarted workers, so start-up work is not billed to the measurement that follows.

    Returns:
        Seconds waited.
    """
    started = time.perf_counter()
    monitor = TreeMonitor()
    previous = None
    while time.perf_counter() - started < max_seconds:
        monitor.sample(with_pss=False)
        total = sum(monitor.cpu.values())
        if previous is not None and total - previous < busy_below * 0.5:
            break
        previous = total
        time.sleep(0.5)
    return round(time.perf_counter() - started, 2)


def _role(process: psutil.Process) -> str:
    """A short name for where CPU time went: `ray::MapWorker(...)`, `raylet`, `python -m jobs.score`…"""
    try:
        command = process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return "?"
    if not command:
        return process.name()
    if command[0].startswith("ray::"):
        return command[0].split(" ")[0]
    if not os.path.basename(command[0]).startswith("python"):
        return os.path.basename(command[0])
    if "-m" in command[:4]:
        return "python -m " + command[command.index("-m") + 1]
    if "-c" in command[:4]:
        return "python -c"
    scripts = [part for part in command[1:] if not part.startswith("-")]
    return os.path.basename(scripts[0]) if scripts else "python"


def machine() -> dict[str, Any]:
    """What the numbers were measured on, including the load at the time."""
    import pyarrow
    import ray

    info = {
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average": [round(value, 2) for value in os.getloadavg()],
        "ray": ray.__version__,
        "pyarrow": pyarrow.__version__,
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    return info


def write_json(path: str, payload: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as handle:
        json.dump(payload, handle, indent=2, default=str)


def log(benchmark: str, message: str) -> None:
    print(f"[{benchmark} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextmanager
def work_directory(benchmark: str, keep: str | None) -> Iterator[str]:
    """A benchmark's scratch space: `keep` (reused across runs) or a temporary directory removed
    afterwards. TensorFlow's C++ logging is quietened for the run."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.WARNING)
    work = keep or tempfile.mkdtemp(prefix=f"{benchmark}-")
    try:
        yield work
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def finish(results: dict[str, Any], started: float, output: str) -> None:
    """Stamps the run's wall time and end-of-run load, writes the JSON, prints the summary line."""
    results["machine"]["load_average_end"] = [round(value, 2) for value in os.getloadavg()]
    results["seconds"] = round(time.perf_counter() - started, 1)
    write_json(output, results)
    print(results["summary"])
