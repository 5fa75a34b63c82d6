"""tests/README.md maps README promises to tests: every test it names must exist where it says."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def named_tests() -> list[tuple[str, str]]:
    """(file, test) for every `path::test` in the table. A file named without its folder is found
    under tests/; a bare `::test` is in the file named last."""
    found: list[tuple[str, str]] = []
    current = ""
    for row in (TESTS / "README.md").read_text().splitlines():
        if not row.startswith("| ") or "`" not in row:
            continue
        for reference in re.findall(r"`([^`]*::[^`]*)`", row.split("|")[2]):
            path, _, name = reference.partition("::")
            if path:
                (match,) = TESTS.glob(path if "/" in path else f"*/{path}")
                current = str(match.relative_to(TESTS))
            found.append((current, name))
    return found


def test_every_test_named_in_the_tests_readme_exists():
    references = named_tests()
    assert len(references) >= 30
    missing = [
        f"{path}::{name}"
        for path, name in references
        if not re.search(rf"^def {re.escape(name)}\(", (TESTS / path).read_text(), flags=re.MULTILINE)
    ]
    assert not missing, missing
