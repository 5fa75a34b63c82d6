"""The review-loop benchmark runs end to end in its tiny mode and writes the figures it promises.

No assertion on which arm wins: that is what the benchmark reports, not what a test decides.
"""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(1500)]


def test_review_loop_tiny_writes_both_arms_for_every_round(tmp_path):
    from benchmarks import review_loop

    output = tmp_path / "loop.json"
    assert review_loop.main(["--tiny", "--rounds", "1", "--output", str(output)]) == 0
    results = json.loads(output.read_text())
    assert {"settings", "round0", "arms", "summary", "machine"} <= set(results)
    assert results["settings"]["pool_images"] == 40 and results["settings"]["test_images"] == 40
    for arm in ("queue", "random"):
        rows = results["arms"][arm]
        # One round keeps CI short (each round trains and scores twice); the loop is the same.
        assert [row["round"] for row in rows] == [1]
        assert [row["labelled"] for row in rows] == [6]
        for row in rows:
            assert 0 <= row["macro_f1"] <= 1 and 0 <= row["minority_f1"] <= 1
            assert row["test_images"] == 40
    # Both arms start from the same round-0 model and spend the same budget.
    assert 0 <= results["round0"]["macro_f1"] <= 1
    # The JSON is committed: no path of this machine's temporary work directory in it.
    assert results["settings"]["catalog"] == "data/sample_catalog"
    assert results["round0"]["artifact"] == "round0/models/custom_cnn"
    assert str(tmp_path) not in output.read_text() and '"/tmp/' not in output.read_text()
