"""Process set-up shared by the jobs: logging, Ray, exit codes."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import ray

from jobs.config import load_config
from pipeline import console, storage
from pipeline.config import JobConfig, ResourcesConfig
from pipeline.resources import on_remote_cluster

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
# jobs.score only, opt-in (drift.exit_on): the run completed and wrote every row, but its drift
# report reached the configured status. Never returned unless asked for.
EXIT_DRIFT = 3
# How long a cluster named by RAY_ADDRESS has to accept a connection before the job gives up.
CONNECT_TIMEOUT_S = 5.0


# Where a job's log file goes, under its --output (local outputs only).
LOG_DIR = "logs"
# Ray Data's logging config for a quiet console: its records go to the job's own handlers.
RAY_DATA_LOGGING = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ray_data_logging.yaml")
# Handlers this module installs carry this attribute, so a second job in one process replaces them.
_OURS = "_catalog_classifier_handler"
# Loggers that Ray configures with handlers of their own (they do not reach the root logger).
RAY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune")
# A forwarded worker line that a quiet console still shows: a warning, an error or a traceback.
_WORKER_PROBLEM = re.compile(
    r"\b(WARNING|WARN|ERROR|CRITICAL|FATAL)\b|Traceback \(most recent call last\)"
    r"|^[EF]\d{4} |^[\w.]*(Error|Exception): "
)
# TensorFlow's C++ start-up lines in every process that loads it. They are written before TensorFlow
# initialises its logging (absl), so TF_CPP_MIN_LOG_LEVEL does not hold them back: they are
# recognised here, and go to the log file even when one of them says WARNING or E0000 (cuInit
# failing on a machine without a GPU driver is expected).
_TENSORFLOW_START_UP = re.compile(
    r"absl::InitializeLog\(\)|cudart_stub\.cc|cpu_feature_guard\.cc|\] oneDNN custom operations"
    r"|failed call to cuInit|To enable the following instructions|rebuild TensorFlow with the appropriate"
)
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


# Ray's warnings that ask nothing of the person: the embedded cluster's token authentication (Ray's
# default, which the job keeps), and Ray Data's bars being off (this module turns them off).
_RAY_NOTICES = ("Token authentication is enabled for this Ray cluster", "Progress bars disabled.")


class _NotRayNotice(logging.Filter):
    """Keeps `_RAY_NOTICES` off the console (the log file still has them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        # `hide`: what Ray Data marks as not for the console (its own console handler drops it).
        return not getattr(record, "hide", False) and not record.getMessage().startswith(_RAY_NOTICES)


class _NotDeveloperNotice(logging.Filter):
    """Keeps Python's DeprecationWarning and FutureWarning (a library telling its developers about
    a change to come, e.g. tf2onnx on `np.object`) off the console."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (record.name == "py.warnings" and ("DeprecationWarning" in message or "FutureWarning" in message))


def log_file_for(output_uri: str, job: str) -> str | None:
    """`<output>/logs/<job>.log` for a local output, its folder made; None for s3:// or an output
    that cannot be written (the console then keeps the detail, and the job names the problem)."""
    if storage.is_remote(output_uri):
        return None
    path = os.path.join(output_uri.removeprefix("file://"), LOG_DIR, f"{job}.log")
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    except OSError:
        return None
    return path


def quiet_native_logs(verbose: bool) -> None:
    """TensorFlow's C++ start-up lines (CUDA stubs, CPU features, cuInit) and Ray Data's
    per-dataset lines off the console unless `verbose`.

    TensorFlow reads TF_CPP_MIN_LOG_LEVEL once, when it loads: call this before anything imports
    it. Embedded Ray's workers inherit the variable, and `init_ray` passes it on explicitly too.
    """
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        # Read each time Ray Data sets up its logging (at every dataset it runs), and by the
        # embedded Ray's workers, which inherit the environment.
        os.environ.setdefault("RAY_DATA_LOGGING_CONFIG", RAY_DATA_LOGGING)


@contextlib.contextmanager
def native_stderr_to(log_file: str | None) -> Iterator[None]:
    """Sends this process's file descriptor 2 into `log_file` for the block (None: no change).

    For loading TensorFlow in the driver: its C++ start-up lines are written straight to the
    descriptor, before any setting or Python handler can hold them back.
    """
    if log_file is None:
        yield
        return
    os.makedirs(os.path.dirname(log_file), exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(log_file, "a", encoding="utf-8") as target:
            os.dup2(target.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def setup_logging(level: int = logging.INFO, log_file: str | None = None, verbose: bool = True) -> None:
    """Logging for a job: everything at `level` into `log_file` (when given); on the console,
    everything too when `verbose` or without a file, otherwise warnings and errors only.

    Replaces the handlers an earlier call installed (tests run several jobs in one process)."""
    root = logging.getLogger()
    root.setLevel(level)
    for holder in [root, *map(logging.getLogger, RAY_LOGGERS)]:
        for handler in [h for h in holder.handlers if getattr(h, _OURS, False)]:
            holder.removeHandler(handler)
            handler.close()
    quiet = log_file is not None and not verbose
    stream = logging.StreamHandler(sys.stderr)
    stream.setLevel(logging.WARNING if quiet else level)
    stream.setFormatter(logging.Formatter(_FORMAT))
    handlers: list[logging.Handler] = [stream]
    if log_file is not None:
        os.makedirs(os.path.dirname(log_file), exist_ok=True)
        file = logging.FileHandler(log_file, encoding="utf-8")
        file.setLevel(level)
        file.setFormatter(logging.Formatter(_FORMAT))
        handlers.append(file)
    for handler in handlers:
        setattr(handler, _OURS, True)
        root.addHandler(handler)
    _quiet_ray_console(quiet)
    # Python warnings into the log too; the libraries' notices to their developers (deprecations,
    # future changes) stay off a quiet console.
    logging.captureWarnings(True)
    if quiet:
        stream.addFilter(_NotRayNotice())
        stream.addFilter(_NotDeveloperNotice())
    for noisy in ("botocore", "s3fs", "aiobotocore", "urllib3", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _log_file_handler() -> logging.Handler | None:
    for handler in logging.getLogger().handlers:
        if getattr(handler, _OURS, False) and isinstance(handler, logging.FileHandler):
            return handler
    return None


def _quiet_ray_console(quiet: bool) -> None:
    """Ray's own loggers print through handlers of their own (they do not propagate to the root
    logger, and Ray sets them up again when it starts): warnings only on the console when `quiet`,
    everything into the job's log file."""
    file = _log_file_handler()
    for name in RAY_LOGGERS:
        ray_logger = logging.getLogger(name)
        for handler in ray_logger.handlers:
            if getattr(handler, _OURS, False) or isinstance(handler, logging.FileHandler):
                continue
            if isinstance(handler, logging.StreamHandler):
                handler.setLevel(logging.WARNING if quiet else logging.NOTSET)
                if quiet and not any(isinstance(f, _NotRayNotice) for f in handler.filters):
                    handler.addFilter(_NotRayNotice())
        if file is not None and not ray_logger.propagate and file not in ray_logger.handlers:
            ray_logger.addHandler(file)


def new_local_output(output_uri: str) -> bool:
    """True for a local output folder that does not exist yet (the log file would be what makes it)."""
    return not storage.is_remote(output_uri) and not os.path.exists(output_uri.removeprefix("file://"))


def end_log(output_uri: str, log_file: str | None, made_output: bool, verbose: bool, when: str, code: int) -> None:
    """Says where the log is; or, for refused input (exit 2) into an output the job's own log made,
    removes that folder: bad input writes nothing, and its error is already on the console."""
    if code == EXIT_BAD_INPUT and made_output and log_file is not None:
        shutil.rmtree(output_uri.removeprefix("file://"), ignore_errors=True)
        return
    announce_log_file(log_file, verbose, when)


@dataclass(frozen=True)
class JobLog:
    """Where one job's log goes, and whether the job made its local output folder to hold it."""

    output_uri: str
    file: str | None
    made_output: bool
    verbose: bool
    activity: str  # "training", "scoring": what the console lines say is done or failed

    def end(self, code: int, succeeded: tuple[int, ...] = (EXIT_OK,)) -> int:
        """Says where the log is (or removes a folder refused input made) and returns `code`."""
        outcome = "done" if code in succeeded else "failed"
        end_log(self.output_uri, self.file, self.made_output, self.verbose, f"{self.activity} {outcome}", code)
        return code


@contextlib.contextmanager
def job_log(output_uri: str, job: str, activity: str, verbose: bool) -> Iterator[JobLog]:
    """The console and log set-up every job shares. The `with` body imports the job's pipeline
    modules: they load TensorFlow, whose C++ start-up lines go to the log file, not the console."""
    quiet_native_logs(verbose)
    made_output = new_local_output(output_uri)
    log_file = log_file_for(output_uri, job)
    with native_stderr_to(None if verbose else log_file):
        yield JobLog(output_uri, log_file, made_output, verbose, activity)
    setup_logging(log_file=log_file, verbose=verbose)
    announce_log_file(log_file, verbose, activity)


def announce_log_file(log_file: str | None, verbose: bool, when: str) -> None:
    """Tells the person where the detail is, at the start and at the end of a job."""
    if log_file is None:
        return
    quiet = "" if verbose else " (the console shows progress, warnings and errors; --verbose shows it all)"
    print(f"{when}: the full log is {log_file}{quiet}", file=sys.stderr, flush=True)


def sort_worker_line(line: str, verbose: bool) -> tuple[str, str]:
    """Where a line forwarded from a Ray worker goes, and its text: ("console", text) for a line
    marked for the person (`pipeline.console`), ("warning", line) for a warning or an error (the
    console shows it), ("log", line) for the rest (the log file; the console too when `verbose`)."""
    text = console.unmark(line)
    if text is not None:
        return "console", text
    if not verbose and _WORKER_PROBLEM.search(line) and not _TENSORFLOW_START_UP.search(line):
        return "warning", line
    return "log", line


def route_worker_logs(verbose: bool) -> None:
    """Ray workers' forwarded output into the log file; on the console only the lines marked for
    it (`pipeline.console`), warnings and errors, unless `verbose`.

    Ray prints forwarded lines through a handler of its stdstream dispatcher; this swaps that one
    handler. Should a Ray upgrade move it, Ray's own printing stays (noisy, never silent).
    """
    try:
        from ray._private import worker as ray_worker

        dispatcher = ray_worker.global_worker_stdstream_dispatcher
        dispatcher.remove_handler("ray_print_logs")
    except (ImportError, AttributeError, KeyError) as error:
        logger.debug("worker logs left to Ray: %s", error)
        return
    workers = logging.getLogger("catalog_classifier.workers")

    shown: list[str] = []  # the console line last printed: Ray Train can forward a line twice

    def handle(data: dict[str, Any]) -> None:
        source = data.get("actor_name") or data.get("task_name") or ""
        prefix = f"({source} pid={data.get('pid')})".replace("( ", "(")
        for line in data.get("lines", []):
            where, text = sort_worker_line(line, verbose)
            if where == "console" and text not in shown:
                print(text, file=sys.stdout, flush=True)
                shown[:] = [text]
            workers.log(logging.WARNING if where == "warning" else logging.INFO, "%s %s", prefix, text)

    dispatcher.add_handler("catalog_classifier_logs", handle)


def check_paths_usable(**uris: str) -> None:
    """Relative paths name the submitting machine's disk, which a cluster job cannot see (its
    working directory is a temporary copy), so they are refused there rather than guessed at.

    Raises:
        ValueError: A relative path while running on a remote cluster.
    """
    if not on_remote_cluster() or os.environ.get("CATALOG_CLASSIFIER_ALLOW_RELATIVE") == "1":
        return
    for flag, uri in uris.items():
        if uri and not storage.is_remote(uri) and not uri.startswith("file://") and not os.path.isabs(uri):
            raise ValueError(
                f"--{flag.replace('_', '-')} {uri!r} is a relative path, which a Ray cluster "
                "job cannot resolve; use an s3:// URI or an absolute path on shared storage"
            )


def resolve_config(
    config_path: str | None, overrides: list[str], paths: dict[str, str], flags: dict[str, Any]
) -> JobConfig:
    """What both jobs do before any work: refuse unusable data paths, then preset + flags + --set.

    A relative `--config` is fine on a cluster: presets travel with the job (the `--working-dir`
    upload, the image's app directory), and `--config cluster` names the packaged preset anywhere.
    """
    check_paths_usable(**paths)
    config = load_config(config_path, overrides, **flags)
    logger.info("resolved config: %s", config.to_dict())
    return config


def cluster_address() -> str | None:
    """The Ray cluster this job must join, or None for an embedded local Ray.

    Only RAY_ADDRESS asks for a cluster (`ray job submit` sets it for its driver). Without it the
    job starts its own Ray, even when Ray's `ray_current_cluster` file names a cluster started
    earlier on this machine: that file outlives a stopped head, and joining it hangs.

    Raises:
        ValueError: RAY_ADDRESS names a cluster that does not answer within seconds, or a
            dashboard URL (that is for `ray job submit`, not for a driver).
    """
    if not on_remote_cluster():
        return None
    address = os.environ["RAY_ADDRESS"].strip()
    if address.startswith(("http://", "https://")):
        raise ValueError(
            f"RAY_ADDRESS={address!r} (from the environment) is a dashboard address, which "
            "`ray job submit` uses; submit the job with `ray job submit -- python -m jobs...`, "
            "set RAY_ADDRESS to the cluster's GCS address (HOST:6379), or unset it to run on an "
            "embedded local Ray"
        )
    target = address
    if address == "auto":
        from ray._private.utils import read_ray_address

        target = read_ray_address(None) or ""
        if not target:
            raise ValueError(
                "RAY_ADDRESS='auto' (from the environment) but no Ray cluster was started on this "
                "machine; start one with `ray start --head`, or unset RAY_ADDRESS"
            )
    host, _, port = target.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except (OSError, ValueError) as error:
        raise ValueError(
            f"RAY_ADDRESS={address!r} (from the environment) names a Ray cluster at {target!r} that "
            f"does not answer ({type(error).__name__}: {error}); start the cluster, fix RAY_ADDRESS, "
            "or unset it to run on an embedded local Ray"
        ) from error
    return address


def init_ray(resources: ResourcesConfig, verbose: bool = True) -> None:
    """Joins the cluster RAY_ADDRESS names, after checking it answers, or starts an embedded Ray.

    Not `verbose`: an embedded Ray's workers get TF_CPP_MIN_LOG_LEVEL=3 through the runtime env,
    and their forwarded output goes to the log file (`route_worker_logs`). A submitted job keeps
    the runtime env it was submitted with (passing one here would replace its working_dir).
    """
    if ray.is_initialized():
        return
    address = cluster_address()
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        env_vars = {} if verbose else {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")}
        # The dashboard stays on: Ray Train's placement-group cleaner queries the state API it serves.
        ray.init(address="local", num_cpus=resources.num_cpus, log_to_driver=True, runtime_env={"env_vars": env_vars})
    route_worker_logs(verbose)
    _quiet_ray_console(not verbose and _log_file_handler() is not None)
    if not verbose:
        from ray.data import DataContext

        # Ray Data's per-operator bars redraw many times a second; the log file cannot hold them.
        DataContext.get_current().enable_progress_bars = False
    logger.info(
        "ray resources: %s (%s)",
        ray.cluster_resources(),
        f"cluster at RAY_ADDRESS={address}" if address else "embedded local Ray",
    )


def run(main_body: Callable[[], int]) -> int:
    """Runs a job body with the product's exit codes: 2 for bad input (ValueError), 1 otherwise."""
    try:
        return main_body()
    except ValueError as error:
        logger.error("%s", error)
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception:
        logger.exception("job failed")
        return EXIT_FAILED
