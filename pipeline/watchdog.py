"""Ends a run that stops making progress, instead of leaving it to hang.

Ray waits for ever for resources that never come (an autoscaler that adds no node, a worker that
took every CPU, a lost node holding a task). The resource check in `pipeline/resources.py` refuses
the cases it can see; this watchdog catches the rest: when nothing has progressed for
`resources.stall_timeout_s` seconds it interrupts the job's main thread, which then fails with a
`StalledError` naming what stalled and the key to change (exit 1 from the jobs).

Progress is a beat: the scoring driver beats per batch of predictions it receives; training
workers beat per step through a small named `Heartbeat` actor, which the driver polls.
"""

from __future__ import annotations

import _thread
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Any

logger = logging.getLogger(__name__)

# After interrupting the main thread, how long to wait for it to unwind before exiting hard.
UNWIND_SECONDS = 60.0
EXIT_FAILED = 1


class StalledError(RuntimeError):
    """A run made no progress for longer than `resources.stall_timeout_s`."""


class Watchdog:
    """Watches progress beats from a background thread; `timeout` <= 0 turns it off.

    Use as a context manager around the blocking part of a job. `beat()` marks progress made in
    this process; `probe`, if given, returns the time of the latest progress made elsewhere (for
    example by Ray Train workers).
    """

    def __init__(
        self, what: str, timeout: float, probe: Callable[[], float] | None = None, poll_seconds: float | None = None
    ):
        self.what, self.timeout, self.probe = what, timeout, probe
        self.poll_seconds = poll_seconds or max(0.5, min(30.0, timeout / 10))
        self.last = time.time()
        self.stalled: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        self.last = time.time()

    def _latest(self) -> float:
        latest = self.last
        if self.probe is not None:
            try:
                latest = max(latest, self.probe())
            except Exception as error:  # a probe that cannot answer is no progress, not a crash
                logger.debug("watchdog probe failed: %s", error)
        return latest

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            idle = time.time() - self._latest()
            if idle < self.timeout:
                continue
            self.stalled = (
                f"{self.what} made no progress for {idle:.0f} s (resources.stall_timeout_s="
                f"{self.timeout:g}); Ray is most likely waiting for resources the cluster "
                "does not have: check `ray status`, or raise resources.stall_timeout_s if "
                "one step really takes this long"
            )
            logger.error("%s", self.stalled)
            _thread.interrupt_main()
            if not self._stop.wait(UNWIND_SECONDS):
                logger.error("the main thread did not stop within %.0f s; exiting", UNWIND_SECONDS)
                os._exit(EXIT_FAILED)
            return

    def __enter__(self) -> Watchdog:
        if self.timeout > 0:
            self._thread = threading.Thread(target=self._watch, name="watchdog", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stop.set()
        # The interrupt arrives as KeyboardInterrupt, or as SystemExit where Ray Train's SIGINT
        # handler aborts the run first; either way the caller sees why.
        if self.stalled is not None and (kind is None or issubclass(kind, (KeyboardInterrupt, SystemExit))):
            raise StalledError(self.stalled) from None


def heartbeat_name() -> str:
    return f"catalog-classifier-heartbeat-{uuid.uuid4().hex[:12]}"


class Heartbeat:
    """Ray actor (zero CPUs) that remembers the time of the latest beat from any worker."""

    def __init__(self) -> None:
        self.last = time.time()

    def beat(self) -> None:
        self.last = time.time()

    def latest(self) -> float:
        return self.last


class HeartbeatSender:
    """Worker side: beats the named `Heartbeat` actor at most every `every` seconds, never blocking."""

    def __init__(self, name: str | None, every: float = 5.0):
        import ray

        self.actor = ray.get_actor(name) if name else None
        self.every, self.sent = every, 0.0

    def __call__(self, force: bool = False) -> None:
        now = time.time()
        if self.actor is not None and (force or now - self.sent >= self.every):
            self.actor.beat.remote()
            self.sent = now


def start_heartbeat() -> tuple[str, Callable[[], float], Callable[[], None]]:
    """Starts a `Heartbeat` actor; returns (its name, a probe for `Watchdog`, a stop function)."""
    import ray

    name = heartbeat_name()
    actor: Any = ray.remote(num_cpus=0)(Heartbeat).options(name=name).remote()

    def probe() -> float:
        return float(ray.get(actor.latest.remote(), timeout=10))

    def stop() -> None:
        ray.kill(actor)

    return name, probe, stop
