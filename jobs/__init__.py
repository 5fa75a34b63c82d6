"""Thin entry points: `python -m jobs.train`, `python -m jobs.score`, `python -m jobs.build_catalog`."""
