"""The scoring progress line: rows, rows/s and ETA; in place on a terminal, a line per tenth otherwise."""

from __future__ import annotations

import io

from pipeline.progress import Progress, format_duration


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_without_a_terminal_it_writes_a_line_per_tenth_and_a_final_line():
    stream, clock = io.StringIO(), Clock()
    progress = Progress(1000, "scoring custom_cnn", stream=stream, clock=clock, tty=False)
    for _ in range(100):  # 100 batches of 10 rows, 1 s each
        clock.now += 1.0
        progress.advance(10)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10, lines  # 10 %, 20 %, ... 90 %, then the final line
    assert lines[0] == "scoring custom_cnn: 100/1000 rows (10%) 10.0 rows/s ETA 1m30s"
    assert lines[4] == "scoring custom_cnn: 500/1000 rows (50%) 10.0 rows/s ETA 50s"
    assert lines[-1] == "scoring custom_cnn: 1000/1000 rows (100%) 10.0 rows/s in 1m40s"
    assert "\r" not in stream.getvalue()


def test_a_big_batch_that_crosses_several_tenths_writes_one_line():
    stream, clock = io.StringIO(), Clock()
    progress = Progress(100, "x", stream=stream, clock=clock, tty=False)
    clock.now += 2.0
    progress.advance(45)
    clock.now += 2.0
    progress.advance(5)
    assert stream.getvalue().splitlines() == [
        "x: 45/100 rows (45%) 22.5 rows/s ETA 2s",
        "x: 50/100 rows (50%) 12.5 rows/s ETA 4s",
    ]


def test_on_a_terminal_it_redraws_one_line_at_most_every_refresh_and_ends_it():
    stream, clock = io.StringIO(), Clock()
    progress = Progress(100, "x", stream=stream, clock=clock, tty=True)
    clock.now += 1.0
    progress.advance(10)
    progress.advance(10)  # same instant: not redrawn
    clock.now += 1.0
    progress.advance(10)
    progress.close()
    progress.close()  # a second close writes nothing
    text = stream.getvalue()
    assert text.count("\r") == 3 and text.count("\n") == 1 and text.endswith("\n")
    assert "\rx: 10/100 rows (10%) 10.0 rows/s ETA 9s\x1b[K" in text
    assert "\rx: 30/100 rows (30%) 15.0 rows/s ETA 5s\x1b[K" in text
    assert text.endswith("\rx: 30/100 rows (30%) 15.0 rows/s in 2s\x1b[K\n")


def test_an_unknown_total_shows_rows_and_rate_only():
    stream, clock = io.StringIO(), Clock()
    with Progress(0, "x", stream=stream, clock=clock, tty=False) as progress:
        clock.now += 4.0
        progress.advance(8)
    assert stream.getvalue() == "x: 8 rows 2.0 rows/s in 4s\n"


def test_durations_read_short():
    assert [format_duration(s) for s in (0, 42.4, 185, 3720, -3)] == ["0s", "42s", "3m05s", "1h02m", "0s"]
