"""Runs a job module as `__main__` and counts what its driver hands to Ray.

`python -m benchmarks.driver_probe jobs.score --catalog ...` behaves like `python -m jobs.score
--catalog ...` in the same process (so the scale benchmark's RSS and CPU sampling still sees the
driver), with Ray's serializer wrapped: every `ray.put` value and every task or actor-call argument
the driver sends passes through `SerializationContext.serialize`, so the sum of their serialized
sizes bounds the bytes the driver puts into the object store from above (Ray inlines small
arguments instead of storing them). Ray Data's `from_items`/`from_arrow` blocks are `ray.put`s and
count; blocks that workers produce never pass through the driver's serializer and do not.

The totals are written as JSON to the file named by `DRIVER_PROBE_OUT` when the process exits.
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import sys
from typing import Any

ENV = "DRIVER_PROBE_OUT"


def install(totals: dict[str, int]) -> None:
    """Wraps Ray's serializer so each serialized value adds its size to `totals`."""
    from ray._private.serialization import SerializationContext

    original = SerializationContext.serialize

    def counted(self: Any, value: Any) -> Any:
        serialized = original(self, value)
        totals["serialized_bytes"] += int(serialized.total_bytes)
        totals["serialized_values"] += 1
        return serialized

    SerializationContext.serialize = counted  # type: ignore[method-assign]


def write(path: str, totals: dict[str, int]) -> None:
    with open(path, "w") as handle:
        json.dump(totals, handle)


def main() -> None:
    module, sys.argv = sys.argv[1], sys.argv[1:]
    totals = {"serialized_bytes": 0, "serialized_values": 0}
    install(totals)
    path = os.environ.get(ENV)
    if path:
        atexit.register(write, path, totals)
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
