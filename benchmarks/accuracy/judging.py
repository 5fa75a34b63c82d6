"""The issue's targets judged from the rows (met / missed / not measured), and the imbalance strategy by evidence."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from benchmarks.accuracy.settings import default_imbalance

Row = dict[str, Any]
Target = dict[str, str]


# The figures the judgements read, averaged over a row's repeats.
JUDGED = {"heldout": ("macro_f1", "minority_f1", "accuracy", "ece_calibrated", "ece_uncalibrated"),
          "internal_test": ("macro_f1",)}  # fmt: skip


def mean_rows(rows: list[Row]) -> list[Row]:
    """One row per variant and strategy, its judged figures the mean over its repeats ("#k"), so
    a target is met or missed by the mean of every run, not by whichever repeat came first."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row["row"].split("#")[0], []).append(row)
    merged = []
    for group, members in groups.items():
        row = {**members[0], "row": group if len(members) == 1 else f"{group} (mean of {len(members)})"}
        for block, keys in JUDGED.items():
            row[block] = {**members[0][block]}
            for key in keys:
                row[block][key] = statistics.fmean(float(member[block][key]) for member in members)
        merged.append(row)
    return merged


def _averaged(results: dict) -> dict:
    return {**results, "rows": mean_rows(results["rows"])}


def _rows(results: dict, predicate: Callable[[Row], bool]) -> list[Row]:
    return [row for row in results["rows"] if predicate(row)]


def _default_row(results: dict, variant: str) -> Row | None:
    rows = _rows(results, lambda r: r["variant"] == variant)
    return next((r for r in rows if r["imbalance"] == default_imbalance(r["model"])), rows[0] if rows else None)


def _f1(row: Row) -> float:
    return float(row["heldout"]["macro_f1"])


def _minority(row: Row) -> float:
    return float(row["heldout"]["minority_f1"])


def _target(name: str, met: bool | None, detail: str) -> Target:
    return {"target": name, "status": "not measured" if met is None else ("met" if met else "missed"), "detail": detail}


def judge(results: dict) -> list[Target]:
    """The issue's targets, each met / missed / not measured, with the numbers behind it (the mean
    over repeats where a row ran more than once)."""
    results = _averaged(results)
    mobilenet = _default_row(results, "product_mobilenet_v2")
    cnn = _default_row(results, "product_custom_cnn")
    baselines = _rows(results, lambda r: r["family"] == "baseline")
    targets = _mobilenet_beats_baselines(mobilenet, baselines)
    targets.append(_mobilenet_beats_cnn(mobilenet, cnn))
    targets.append(_cnn_beats_baseline_cnn(cnn, [r for r in baselines if r["model"] == "custom_cnn"]))
    lite0 = _default_row(results, "product_efficientnet_lite0")
    if results["rows"]:
        targets.append(_minority_f1_of_best(results, [row for row in (mobilenet, cnn, lite0) if row]))
    scratch = _default_row(results, "product_mobilenet_v2_scratch")
    shipped = [row for row in (mobilenet, cnn, scratch, lite0) if row]
    if shipped:
        targets.append(_calibrated(shipped, _rows(results, lambda r: r["family"] == "product")))
    return targets


def _mobilenet_beats_baselines(mobilenet: Row | None, baselines: list[Row]) -> list[Target]:
    if not (mobilenet and baselines):
        return [
            _target(
                "product pretrained mobilenet_v2 >= best baseline (macro-F1, minority F1)", None, "variants not run"
            )
        ]
    best = max(baselines, key=_f1)
    best_minority = max(baselines, key=_minority)
    return [
        _target(
            "product pretrained mobilenet_v2 >= best baseline, held-out macro-F1",
            _f1(mobilenet) >= _f1(best),
            f"{mobilenet['row']} {_f1(mobilenet):.4f} vs {best['row']} {_f1(best):.4f}",
        ),
        _target(
            "product pretrained mobilenet_v2 >= best baseline, held-out minority F1",
            _minority(mobilenet) >= _minority(best_minority),
            f"{mobilenet['row']} {_minority(mobilenet):.4f} vs {best_minority['row']} {_minority(best_minority):.4f}",
        ),
    ]


def _mobilenet_beats_cnn(mobilenet: Row | None, cnn: Row | None) -> Target:
    name = "product pretrained mobilenet_v2 > product custom_cnn, held-out macro-F1"
    if not (mobilenet and cnn):
        return _target(name, None, "variants not run")
    return _target(name, _f1(mobilenet) > _f1(cnn), f"{_f1(mobilenet):.4f} vs {_f1(cnn):.4f}")


def _cnn_beats_baseline_cnn(cnn: Row | None, cnn_baselines: list[Row]) -> Target:
    name = "product custom_cnn >= baseline CNN, held-out macro-F1"
    if not (cnn and cnn_baselines):
        return _target(name, None, "variants not run")
    best = max(cnn_baselines, key=_f1)
    return _target(name, _f1(cnn) >= _f1(best), f"{cnn['row']} {_f1(cnn):.4f} vs {best['row']} {_f1(best):.4f}")


def _minority_f1_of_best(results: dict, defaults: list[Row]) -> Target:
    best = max(results["rows"], key=_f1)
    detail = f"best of all rows: {best['row']}: {results['minority']} F1 {_minority(best):.4f}"
    if defaults and best not in defaults:
        best_default = max(defaults, key=_f1)
        detail += (
            f"; best with the product defaults: {best_default['row']}: "
            f"{results['minority']} F1 {_minority(best_default):.4f}"
        )
    return _target("minority F1 >= 0.8 for the best model (by held-out macro-F1)", _minority(best) >= 0.8, detail)


def _calibrated(shipped: list[Row], products: list[Row]) -> Target:
    others = [r for r in products if r not in shipped]
    detail = "; ".join(
        f"{r['row']} {r['heldout']['ece_uncalibrated']:.4f} → {r['heldout']['ece_calibrated']:.4f}" for r in shipped
    )
    if others:
        detail += (
            " (other strategies, not judged: "
            + "; ".join(f"{r['row']} → {r['heldout']['ece_calibrated']:.4f}" for r in others)
            + ")"
        )
    return _target(
        "ECE <= 0.05 after calibration (product models with the default imbalance strategy, held-out)",
        all(r["heldout"]["ece_calibrated"] <= 0.05 for r in shipped),
        detail,
    )


def imbalance_choice(results: dict) -> dict[str, Any]:
    """Per product model with more than one strategy run: the best by held-out macro-F1 (minority
    F1 breaks ties), next to what the internal test split would have said; repeats are averaged."""
    results = _averaged(results)
    choice = {}
    for variant in ("product_custom_cnn", "product_mobilenet_v2"):
        rows = _rows(results, lambda r, v=variant: r["variant"] == v)
        if len(rows) < 2:
            continue
        ranked = sorted(rows, key=lambda r: (r["heldout"]["macro_f1"], r["heldout"]["minority_f1"]), reverse=True)
        choice[variant] = {
            "current_default": default_imbalance(rows[0]["model"]),
            "best_by_heldout": ranked[0]["imbalance"],
            "best_by_internal_test": max(rows, key=lambda r: r["internal_test"]["macro_f1"])["imbalance"],
            "ranking": [
                {
                    "imbalance": r["imbalance"],
                    "macro_f1": r["heldout"]["macro_f1"],
                    "minority_f1": r["heldout"]["minority_f1"],
                    "accuracy": r["heldout"]["accuracy"],
                    "ece_calibrated": r["heldout"]["ece_calibrated"],
                }
                for r in ranked
            ],
            "margin_over_default": None,
        }
        default = next((r for r in rows if r["imbalance"] == default_imbalance(r["model"])), None)
        if default:
            choice[variant]["margin_over_default"] = ranked[0]["heldout"]["macro_f1"] - default["heldout"]["macro_f1"]
    return choice
