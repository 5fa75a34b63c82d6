"""Lines meant for the person at the console, written from Ray workers.

A Ray worker's output reaches the driver's console only through Ray's log forwarding, mixed with
everything else the worker prints. The driver (`jobs/runtime.py`) sends forwarded lines to the log
file and shows on the console only warnings, errors and the lines marked here, so the few lines a
person wants (one per epoch) survive a quiet console without a channel of their own.
"""

from __future__ import annotations

import sys

MARK = "[catalog-classifier] "


def say(text: str) -> None:
    """Prints `text` marked for the driver's console (stdout, flushed: Ray forwards it at once)."""
    print(MARK + text, file=sys.stdout, flush=True)


def unmark(line: str) -> str | None:
    """The console text of a marked line, or None for any other line."""
    index = line.find(MARK)
    return line[index + len(MARK) :] if index >= 0 else None


def epoch_line(
    model: str, phase: str, epoch: int, epochs: int, row: dict[str, float], left_seconds: float | None
) -> str:
    """One epoch as a person reads it: which model, where in its phases, how well, how long."""
    text = (
        f"{model} {phase} epoch {epoch}/{epochs}: loss {row['loss']:.4f} accuracy {row['accuracy']:.4f} "
        f"val_loss {row['val_loss']:.4f} val_accuracy {row['val_accuracy']:.4f} ({row['seconds']:.1f} s"
    )
    if left_seconds is not None and left_seconds > 0:
        text += f", at most ~{left_seconds:.0f} s left for {model}"
    return text + ")"
