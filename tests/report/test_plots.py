"""The summary's plots from hand-made trials: at most 8 trials named, at most 4 panels a row, every threshold and
baseline on the panel it belongs to with its own label, log axes for loguniform keys, strips for categories."""
import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tune_p7.report.plots import STYLE, References, axis_kind, curves, outcome_grid, plots


def layout(png: bytes) -> dict:
    image = Image.open(io.BytesIO(png))
    return {"size": image.size, **json.loads(image.text["Description"])}


@pytest.fixture
def trials():
    """30 ranked trials, 3 epochs each, with six varied hyperparameters of every kind."""
    rng = np.random.default_rng(0)
    n = 30
    df = pd.DataFrame({
        "rank": range(1, n + 1), "trial_id": [f"t{i:02d}" for i in range(n)], "verdict": "FAIL",
        "status": rng.choice(["completed", "asha_stopped", "gate_stopped"], n),
        "margin": rng.uniform(-0.1, 0.3, n), "r_at_5": rng.uniform(0.1, 0.6, n),
        "config/lr": 10 ** rng.uniform(-4, -2, n), "config/w_margin": rng.uniform(0.3, 0.7, n),
        "config/arch": rng.choice(["transformer", "lstm"], n), "config/context_length": rng.choice([3, 5, 7], n),
        "config/temperature": rng.choice([0.05, 0.07, 0.1], n), "config/use_gate": rng.choice([True, False], n)})
    results = {t: [{"epoch": e, "margin": m * e / 3, "cos_next": 0.3, "cos_anchor": 0.5, "r_at_5": r}
                   for e in (1, 2, 3)] for t, m, r in zip(df["trial_id"], df["margin"], df["r_at_5"])}
    return df, results


REFS = References(direct={"margin": -0.45, "cos_next": 0.5, "r_at_5": 0.2},
                  ridge={"margin": 0.05, "cos_next": 0.55, "cos_anchor": 0.8, "r_at_5": 0.3},
                  oracle={"margin": 0.4, "cos_next": 1.0, "cos_anchor": 0.6}, gates={"drift": 0.05, "margin": 0.1},
                  knn={"margin": -0.2, "r_at_5": 0.25})


def test_curves_name_the_top_eight_trials_outside_the_axes_with_each_panels_own_references(trials):
    df, results = trials
    got = layout(curves(df, results, REFS))
    assert got["size"][0] <= 2400 and got["grid"] == [[1, 4]]
    named = [e for e in got["legend"] if e.startswith("#")]
    assert named == [f"#{i + 1} t{i:02d} (FAIL)" for i in range(8)] and "22 other trials" in got["legend"]
    panels = {p["title"]: " | ".join(p["labels"]) for p in got["panels"]}
    assert "margin gate 0.10" in panels["val margin"] and "PASS 0.20" in panels["val margin"]
    assert "drift gate 0.05" in panels["val cos_anchor"] and "margin gate" not in panels["val cos_anchor"]
    assert "PASS 0.40" in panels["val cos_anchor"] and "oracle 0.60" in panels["val cos_anchor"]
    assert "oracle 1.00" in panels["val cos_next"] and "DIRECT 0.50" in panels["val cos_next"]
    assert "deploy 0.30 (DIRECT + 0.10)" in panels["val R@5"] and "ridge 0.30" in panels["val R@5"]
    assert "kNN 0.25" in panels["val R@5"] and "kNN -0.20" in panels["val margin"]
    assert STYLE["drift gate"][0] != STYLE["margin gate"][0]


def test_a_baseline_far_off_the_trials_range_is_labelled_at_the_edge_not_squashing_the_curves(trials):
    df, results = trials
    refs = References(direct={"margin": -5.0}, gates={"margin": 0.1})
    margin = next(p for p in layout(curves(df, results, refs))["panels"] if p["title"] == "val margin")
    assert "\u25bc DIRECT -5.00" in margin["labels"]


def test_hyperparameter_grid_has_at_most_four_panels_a_row_log_axes_for_loguniform_keys(trials):
    df, _ = trials
    keys = [c for c in df if c.startswith("config/")]
    sampler = {"lr": "loguniform", "w_margin": "uniform", "context_length": "grid", "temperature": "choice"}
    got = layout(outcome_grid(df, keys, sampler, "margin", "final val margin", REFS))
    assert got["size"][0] <= 2400 and got["grid"] == [[2, 4]] and len(got["panels"]) == 6
    scale = {p["title"]: p["xscale"] for p in got["panels"]}
    assert scale["lr (log)"] == "log" and scale["w_margin"] == "linear"
    assert {"PASS 0.20", "DIRECT -0.45", "ridge 0.05", "oracle 0.40"} <= set(got["legend"])
    assert not any(" gate " in e for e in got["legend"])  # gates act on the curves, not on final values
    r5 = layout(outcome_grid(df, keys, sampler, "r_at_5", "final val R@5", REFS))
    assert {"DIRECT 0.20", "deploy 0.30 (DIRECT + 0.10)"} <= set(r5["legend"])


def test_axis_kinds_numeric_log_and_categorical():
    assert axis_kind(pd.Series([1e-4, 1e-3, 3e-3]), "loguniform") == "log"
    assert axis_kind(pd.Series([1e-4, 1e-3, 3e-3]), None) == "numeric"
    assert axis_kind(pd.Series([3, 5, 7]), "grid") == "numeric"
    assert axis_kind(pd.Series(["lstm", "transformer"]), "choice") == "categorical"
    assert axis_kind(pd.Series([True, False]), "grid") == "categorical"


def test_no_hyperparameter_plots_without_varied_keys(trials):
    df, results = trials
    assert set(plots(df, results, REFS, [], {})) == {"curves.png"}
    assert plots(df.iloc[:0], {}, REFS, [], {}) == {}
