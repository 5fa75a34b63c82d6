"""Every benchmark command the README shows parses with that benchmark's own flags.

The full runs take minutes to hours, so CI runs each benchmark's tiny mode instead (see
tests/README.md); this test keeps the README's lines from naming a flag or a benchmark that no
longer exists. The commands are read from the README's text, never copied here.
"""

from __future__ import annotations

import importlib
import re
import shlex

import pytest

from tests import documented

COMMAND = re.compile(r"python -m (benchmarks\.[a-z_]+)([^`\n#]*)")


def readme_benchmark_commands() -> list[tuple[str, list[str]]]:
    text = documented.README.read_text()
    return [(module, shlex.split(flags)) for module, flags in COMMAND.findall(text)]


def test_the_readme_shows_the_benchmarks_it_reports():
    modules = {module for module, _ in readme_benchmark_commands()}
    reported = {"benchmarks.accuracy", "benchmarks.review_loop", "benchmarks.scale", "benchmarks.workers_accuracy"}
    assert reported <= modules


@pytest.mark.parametrize("module, argv", readme_benchmark_commands(), ids=lambda value: str(value)[:60])
def test_each_readme_benchmark_command_parses_with_its_flags(module, argv):
    parser_module = importlib.import_module("benchmarks.accuracy.flags" if module == "benchmarks.accuracy" else module)
    parser = parser_module.build_parser()
    try:
        parser.parse_args(argv)
    except SystemExit as exited:  # argparse exits 2 on an unknown flag or a bad value
        pytest.fail(f"README: python -m {module} {shlex.join(argv)} does not parse (exit {exited.code})")
