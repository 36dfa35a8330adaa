"""bench/search_compare.py's headline ratio: a replay that never reached the target is censored (it would have got
there after more than it spent), so a ratio of medians is known between bounds, never set to 0 or inf by it."""
import math
import sys

import numpy as np
import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
from search_compare import ratio_ci  # noqa: E402

INF = math.inf


def test_a_method_that_always_reaches_where_the_baseline_never_does_is_bounded_by_what_the_baseline_spent():
    h = ratio_ci([10] * 20, [INF] * 20, [100] * 20, [200] * 20, np.random.default_rng(0))
    assert h["median"] is None and h["median_bounds"] == [0.0, 0.05]  # at most 10 / 200
    assert h["ci95"] == [None, 0.05] and h["censored"] == {"baseline_never": 1.0, "method_never": 0.0}


def test_a_method_that_never_reaches_has_no_upper_end_and_a_lower_end_from_what_it_spent():
    h = ratio_ci([INF] * 20, [50] * 20, [100] * 20, [200] * 20, np.random.default_rng(0))
    assert h["median_bounds"] == [2.0, INF] and h["ci95"] == [2.0, None]  # at least 100 / 50


def test_without_censoring_the_ratio_is_the_ratio_of_medians_with_a_bootstrap_interval_around_it():
    h = ratio_ci([10, 20, 30] * 10, [40, 50, 60] * 10, [100] * 30, [200] * 30, np.random.default_rng(0))
    assert h["median"] == pytest.approx(0.4) and h["ci95"][0] < 0.4 < h["ci95"][1]


def test_an_end_that_a_few_censored_resamples_decide_is_not_an_interpolation_towards_inf():
    """Half the baseline's replays never got there: some resamples' medians are inf, and the interval's upper end
    stays a finite order statistic of the others (not a value between a finite median and inf)."""
    base = [40.0] * 11 + [INF] * 9
    h = ratio_ci([20.0] * 20, base, [100] * 20, [60] * 20, np.random.default_rng(1))
    assert h["ci95"][1] is not None and h["ci95"][1] <= 0.5 + 1e-12  # at most 20 / 40


def test_a_table_replayed_without_100_trials_keeps_its_headline_and_a_real_data_table_gets_the_real_goal(
        tmp_path, monkeypatch):
    import json

    import search_compare

    monkeypatch.setattr(search_compare, "results_dir", lambda quick: tmp_path)
    kept = {"median": 0.9, "replays": [1000, 1099]}
    (tmp_path / "summary.json").write_text(json.dumps({"default_method_epochs_vs_random_asha": {"grid_a": kept}}))
    figures = {  # grid_a replayed at 25 and 50 trials only; grid_b, real data, at 100
        "grid_a": {"ranks_at_100": {}, "default_method_epochs_vs_random_asha": None,
                   "recording": {"data": "tune_p7.data.synth 120:24:64:2.0:0"}},
        "grid_b": {"ranks_at_100": {"default": {"rank": 1.0, "ci95": [1.0, 2.0]}},
                   "default_method_epochs_vs_random_asha": {"method": "default", "median_bounds": [0.55, 0.55],
                                                            "ci95": [0.4, 0.7]},
                   "recording": {"data": "data/pydocs.parquet"}}}
    search_compare.merge_summary(figures, [1000, 1099])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["default_method_epochs_vs_random_asha"]["grid_a"] == kept
    assert "grid_a" not in summary["search_method_ranks_at_100"]
    assert summary["default_method_epochs_vs_random_asha"]["grid_b"]["median_bounds"] == [0.55, 0.55]
    target = summary["targets"]["default_method_epochs_vs_random_asha/grid_b"]
    assert target["target"] == "<= 0.6 (upper end <= 0.75)" and target["met"]  # the synthetic goal (0.4) would fail
