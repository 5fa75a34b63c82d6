"""The catalog tool writes the requested class counts, reproducibly, from IDX files."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest

from jobs import build_catalog as job
from pipeline.fashion_mnist import build_catalog


@pytest.fixture
def idx_source(tmp_path):
    """Real IDX-format files (as in the Debian package), with generated pixels."""
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 300), ("t10k", 100)):
        labels = np.arange(count, dtype=np.uint8) % 10
        pixels = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        with gzip.open(tmp_path / f"{prefix}-images-idx3-ubyte.gz", "wb") as handle:
            handle.write(
                np.array([0, 0, 8, 3], np.uint8).tobytes()
                + np.array([count, 28, 28], ">u4").tobytes()
                + pixels.tobytes()
            )
        with gzip.open(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", "wb") as handle:
            handle.write(
                np.array([0, 0, 8, 1], np.uint8).tobytes() + np.array([count], ">u4").tobytes() + labels.tobytes()
            )
    return str(tmp_path)


def test_counts_and_reproducibility(idx_source, tmp_path):
    counts = {"sneaker": 12, "sandal": 3, "bag": 20}
    build_catalog(str(tmp_path / "one"), counts, "train", seed=5, source=idx_source)
    build_catalog(str(tmp_path / "two"), counts, "train", seed=5, source=idx_source)
    for name, count in counts.items():
        files = sorted(os.listdir(tmp_path / "one" / name))
        assert len(files) == count
        assert files == sorted(os.listdir(tmp_path / "two" / name))


def test_heldout_comes_from_test_split_only(idx_source, tmp_path):
    build_catalog(str(tmp_path / "held"), {"bag": 5}, "test", source=idx_source)
    assert all(name.startswith("test-") for name in os.listdir(tmp_path / "held" / "bag"))


def test_cli_rejects_bad_requests(idx_source, tmp_path):
    assert job.main(["--output", str(tmp_path / "x"), "--counts", "unicorn=3", "--source", idx_source]) == 2
    assert job.main(["--output", str(tmp_path / "x"), "--counts", "bag=999", "--source", idx_source]) == 2
    assert job.main(["--output", str(tmp_path / "x"), "--counts", "bag=4", "--source", idx_source]) == 0
