"""Performance benchmarks: scripts that measure the product against hand-written baselines.

Run them as modules from the repository root, e.g. `python -m benchmarks.score_throughput --tiny`.
They are not tests: they report numbers (JSON + a one-line summary) and assert nothing about time.
"""
