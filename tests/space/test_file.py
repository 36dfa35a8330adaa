"""Search spaces: the shipped files load; every kind of mistake names the file and the key."""
import time
from pathlib import Path

import pytest
from ray import tune

from conftest import SMALL
from tune_p7.core.config import P7Config
from tune_p7.core.loop import fit
from tune_p7.data.loading import load
from tune_p7.errors import InputError
from tune_p7.space.file import load_space, trial_config

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"


def test_seed_grid_is_exactly_the_four_runs():
    s = load_space(SPACES / "seed_grid.yaml")
    assert [(r["context_length"], r["margin"], r["lambda_init"]) for r in s.runs] == \
        [(5, 0.07, 0.8), (5, 0.07, 0.6), (5, 0.10, 0.8), (7, 0.07, 0.8)]
    assert s.runs[1]["lambda_min"] == 0.5  # the strong-anchoring run: its start lambda 0.6 off the bound
    ps = s.param_space()
    assert ps["run"] == tune.grid_search(s.runs)
    assert trial_config({"epochs": 10, "run": s.runs[3]}) == {"epochs": 10, "context_length": 7, "margin": 0.07,
                                                               "lambda_init": 0.8}


def test_seed_grid_strong_anchoring_run_moves_lambda(strong_store):
    """The run's own config (model shrunk, 2 epochs): lambda leaves its start. Started on lambda_min it stayed
    within 3e-5 of 0.6 (the logit clamped at p = 1e-4); from 0.6 in [0.5, 0.9] it moved ~0.003."""
    s = load_space(SPACES / "seed_grid.yaml")
    size = {k: SMALL[k] for k in ("d_model", "n_layers", "n_heads", "d_ff", "threads", "precision")}
    cfg = P7Config.from_dict({**trial_config({**s.params, "run": s.runs[1]}), **size, "epochs": 2})
    assert (cfg.lambda_init, cfg.lr, cfg.batch_size) == (0.6, 5e-4, 64)
    history = fit(cfg, load(strong_store))
    assert abs(history[-1]["anchor_lambda"] - 0.6) > 1e-3, [m["anchor_lambda"] for m in history]


def test_wide_and_smoke_load():
    wide = load_space(SPACES / "wide.yaml")
    assert sorted(wide.values_of("context_length")) == [3, 5, 7]
    assert set(wide.values_of("arch")) == {"transformer", "lstm"}
    assert isinstance(wide.param_space()["lr"], tune.search.sample.Float)
    smoke = load_space(SPACES / "smoke.yaml")
    assert smoke.scheduler.name == "asha"


def test_confirm_defaults_to_top_3_by_3_seeds_in_2_folds_and_top_0_turns_it_off(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("params: {epochs: 2}\n")
    c = load_space(path).confirm
    assert (c.top, c.seeds, c.folds) == (3, 3, 2)
    path.write_text("confirm: {top: 0}\n")
    assert load_space(path).confirm.top == 0
    path.write_text("confirm: {folds: 1}\n")
    with pytest.raises(InputError, match="confirm.folds.*>= 2"):
        load_space(path)
    smoke = load_space(SPACES / "smoke.yaml").confirm
    assert smoke.top * smoke.seeds * smoke.folds <= 4  # the README's first command stays quick


def test_override_fixes_epochs_everywhere():
    s = load_space(SPACES / "seed_grid.yaml").override(epochs=3, seed=None)
    assert s.values_of("epochs") == [3] * 4


def refused(path, words, call=None):
    """``call`` (default: loading ``path``) raises one line naming ``path`` and holding every one of ``words``."""
    with pytest.raises(InputError) as e:
        (call or (lambda: load_space(path)))()
    msg = str(e.value)
    assert msg.startswith(str(path)) and "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_an_epochs_override_asha_cannot_run_is_refused_naming_the_flag():
    s = load_space(SPACES / "seed_grid.yaml")
    refused(s.source, ["'scheduler.grace_period' 3", "'epochs' 2", "(with --epochs 2)"], lambda: s.override(epochs=2))


def test_a_scheduler_override_asha_cannot_run_is_refused_naming_the_flag(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("params: {epochs: 1}\nscheduler: {name: fifo}\n")
    s = load_space(path)
    refused(path, ["'scheduler.grace_period' 2", "'epochs' 1", "(with --scheduler asha)"],
            lambda: s.override(scheduler="asha"))


@pytest.mark.parametrize("text, words", [
    ("params: [1, 2", ["not valid YAML"]),
    ("- just\n- a list\n", ["expected a mapping"]),
    ("paramz: {}\n", ["unknown key 'paramz'"]),
    ("params: {lrr: 0.1}\n", ["unknown key 'params.lrr'"]),
    ("params: {lr: fast}\n", ["'lr'", "finite number"]),
    ("params: {margin: {grid: []}}\n", ["params.margin", "non-empty list"]),
    ("params: {lambda_init: {grid: [0.8, 1.5]}}\n", ["lambda_init", "out of range"]),
    ("params: {temperature: -0.07}\n", ["temperature", "out of range"]),
    ("params: {margin: -0.1}\n", ["margin", "out of range"]),
    ("params: {batch_size: 0}\n", ["batch_size", "out of range"]),
    ("params: {lr: {loguniform: [0.01, 0.001]}}\n", ["params.lr", "low < high"]),
    ("params: {lr: {sometimes: [1]}}\n", ["params.lr", "sampler"]),
    ("runs: []\n", ["'runs' is empty"]),
    ("runs: [{context_length: 5, bogus: 1}]\n", ["runs[0]", "bogus"]),
    ("num_samples: 0\n", ["num_samples"]),
    ("scheduler: {name: hyperband}\n", ["scheduler.name"]),
    ("scheduler: {grace: 1}\n", ["unknown key 'scheduler.grace'"]),
    ("gates: {drift: high}\n", ["gates.drift", "float"]),
    ("checkpoints: {num_to_keep: 0}\n", ["num_to_keep"]),
    ("metric: r5\n", ["key 'metric'", "'r5' is not a metric every trial reports"]),
    ("params: {lambda_init: 0.95}\n", ["lambda_init 0.95 is outside"]),
    # every configuration the space can produce, not only the first value of each sampler
    ("params: {d_model: 64, n_heads: {grid: [8, 6]}}\n", ["key 'n_heads'", "d_model 64", "n_heads 6"]),
    ("params: {d_model: {choice: [64, 90]}, n_heads: 4}\n", ["key 'n_heads'", "d_model 90"]),
    ("params: {d_model: 64, arch: {grid: [lstm, transformer]}}\nruns: [{n_heads: 4}, {n_heads: 5}]\n",
     ["runs[1]", "key 'n_heads'", "n_heads 5"]),
    ("params: {lambda_init: {uniform: [0.7, 0.9]}}\n", ["key 'lambda_init'", "0.9 is within 5%"]),
    ("params: {lambda_min: {uniform: [0.5, 0.8]}}\n", ["key 'lambda_init'", "0.8 is within 5%", "[0.8, 0.9]"]),
    ("runs: [{lambda_init: 0.8}, {lambda_init: 0.6}]\n", ["runs[1]", "key 'lambda_init'", "0.6 is within 5%"]),
    # scheduler settings Ray's ASHA asserts on
    ("params: {epochs: 1}\n", ["'scheduler.grace_period' 2", "'epochs' 1", "ASHA needs grace_period <="]),
    ("params: {epochs: {grid: [1, 2]}}\nscheduler: {grace_period: 3}\n", ["'scheduler.grace_period' 3", "'epochs' 2"]),
    ("confirm: {tops: 3}\n", ["unknown key 'confirm.tops'"]),
    ("confirm: {top: -1}\n", ["confirm.top", ">= 0"]),
    ("confirm: {seeds: 0}\n", ["confirm.seeds", ">= 1"]),
    ("confirm: {seeds: 2.5}\n", ["confirm.seeds", "expected int"]),
    ("confirm: 3\n", ["'confirm' must be a mapping"]),
    ("search: {algorithm: smac}\n", ["search.algorithm", "smac", "optuna"]),
    ("search: {algorithm: optuna, n_trials: 5}\n", ["search.n_trials", "unknown key"]),
    ("search: {algorithm: optuna, gamma: 0.3}\n", ["search.gamma", "setting of hyperopt, not of optuna"]),
    ("search: {algorithm: optuna, n_startup_trials: many}\n", ["search.n_startup_trials", "expected int"]),
    ("search: {algorithm: optuna, multivariate: 1}\n", ["search.multivariate", "expected bool"]),
    ("search: {algorithm: hyperopt, gamma: 1.5}\n", ["search.gamma", "<= 1.0"]),
    ("search: {algorithm: bohb, reduction_factor: 1}\n", ["search.reduction_factor", "> 1"]),
    ("search: {algorithm: optuna, seed: -1}\n", ["search.seed", ">= 0"]),
    ("search: optuna\n", ["'search' must be a mapping"]),
    ("params: {lr: {uniform: [0.001, 0.01]}}\nsearch: {algorithm: optuna, points_to_evaluate: [{lrr: 0.002}]}\n",
     ["search.points_to_evaluate[0]", "unknown key 'lrr'"]),
    ("params: {lr: {uniform: [0.001, 0.01]}}\nsearch: {algorithm: optuna, points_to_evaluate: [{lr: 0.5}]}\n",
     ["search.points_to_evaluate[0]", "'lr'", "outside params.lr"]),
    ("params: {lr: {uniform: [0.001, 0.01]}}\nsearch: {algorithm: optuna, points_to_evaluate: [{}]}\n",
     ["search.points_to_evaluate[0]", "its default"]),
    ("params: {lr: {uniform: [0.001, 0.01]}, margin: 0.1}\n"
     "search: {algorithm: optuna, points_to_evaluate: [{lr: 0.002, margin: 0.05}]}\n",
     ["search.points_to_evaluate[0]", "'margin' is not sampled"]),
    ("params: {lr: {uniform: [0.001, 0.01]}}\nsearch: {algorithm: optuna, points_to_evaluate: [{lr: fast}]}\n",
     ["search.points_to_evaluate[0]", "'lr'", "finite number"]),
    ("params: {lr: {uniform: [0.001, 0.01]}}\nsearch: {algorithm: optuna, points_to_evaluate: [0.002]}\n",
     ["search.points_to_evaluate[0]", "mapping"]),
    ("num_samples: 1\nparams: {lr: {uniform: [0.001, 0.01]}}\n"
     "search: {algorithm: optuna, points_to_evaluate: [{lr: 0.002}, {lr: 0.003}]}\n", ["num_samples", "2 points"]),
    ("search: {points_to_evaluate: [{}]}\n", ["search.points_to_evaluate", "model-based"]),
    ("runs: [{margin: 0.1}]\nsearch: {algorithm: optuna}\n", ["'runs'", "points_to_evaluate"]),
    ("scheduler: {name: asha}\nsearch: {algorithm: bohb}\n", ["'scheduler'", "HyperBandForBOHB"]),
    ("params: {epochs: {grid: [2, 4]}}\nsearch: {algorithm: bohb}\n", ["params.epochs", "budget"]),
])
def test_bad_space_names_file_and_key(tmp_path, text, words):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    refused(path, words)


@pytest.mark.parametrize("text", [
    "params: {arch: {grid: [transformer, lstm]}, d_model: 60, n_heads: {grid: [4, 6]}}\n",
    "params: {d_model: 64, n_heads: 4}\nruns: [{arch: transformer}, {arch: lstm, n_heads: 7}]\n",  # LSTMs have no heads
    "params: {lambda_min: {uniform: [0.5, 0.7]}, lambda_init: {uniform: [0.75, 0.8]}}\n",
    "params: {lambda_min: 0.7, lambda_max: 0.7, lambda_init: 0.7}\n",  # lambda fixed
    "params: {epochs: 1}\nscheduler: {name: fifo}\n",
])
def test_spaces_whose_every_configuration_runs_load(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    load_space(path)


def test_keys_without_cross_key_rules_are_not_multiplied_out(tmp_path):
    """12 grids of 5 values (244M configurations) load at once: only keys of a cross-key rule are combined."""
    keys = ["w_rank", "w_margin", "w_teacher", "teacher_floor", "gate_threshold", "gate_weak_weight", "temperature",
            "margin", "dropout", "lr", "weight_decay", "grad_clip"]
    path = tmp_path / "space.yaml"
    path.write_text("params:\n" + "".join(f"  {k}: {{grid: [0.01, 0.02, 0.03, 0.04, 0.05]}}\n" for k in keys))
    t = time.perf_counter()
    load_space(path)
    assert time.perf_counter() - t < 5


def test_a_model_based_search_turns_grids_into_choices_and_fills_points_with_defaults(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("num_samples: 8\nparams:\n  margin: {grid: [0.05, 0.07]}\n  lr: {loguniform: [1.0e-4, 1.0e-3]}\n"
                    "  epochs: {grid: [4, 10]}\n"
                    "search: {algorithm: optuna, seed: 2, points_to_evaluate: [{}, {margin: 0.05, lr: 2.0e-4, epochs: 4}]}\n")
    s = load_space(path)
    assert s.search.algorithm == "optuna" and s.search.seed == 2 and s.search.n_startup_trials == 10
    assert s.search.points_to_evaluate == ({"margin": 0.07, "lr": 5e-4, "epochs": 10},
                                           {"margin": 0.05, "lr": 2e-4, "epochs": 4})
    margin = s.param_space()["margin"]
    assert isinstance(margin, tune.search.sample.Categorical) and margin.categories == [0.05, 0.07]
    assert load_space(SPACES / "smoke.yaml").param_space()["margin"] == tune.grid_search([0.07, 0.10])
    # --epochs fixes the key everywhere, the points included
    assert s.override(epochs=3).search.points_to_evaluate == ({"margin": 0.07, "lr": 5e-4},
                                                              {"margin": 0.05, "lr": 2e-4})


def test_wide_tpe_is_wide_searched_by_tpe_from_the_seeds_defaults():
    wide, tpe = load_space(SPACES / "wide.yaml"), load_space(SPACES / "wide_tpe.yaml")
    assert tpe.params == wide.params and tpe.scheduler == wide.scheduler and tpe.gates == wide.gates
    assert tpe.search.algorithm == "optuna" and tpe.num_samples < wide.num_samples * 27
    first = tpe.search.points_to_evaluate[0]
    defaults = P7Config()
    assert first == {k: getattr(defaults, k) for k, v in tpe.params.items() if isinstance(v, dict)}


def test_a_missing_search_package_names_the_file_and_the_pip_command(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "hpbandster" else real(name, *a))
    path = tmp_path / "space.yaml"
    path.write_text("search: {algorithm: bohb}\n")
    with pytest.raises(InputError) as e:
        load_space(path)
    assert str(e.value) == f"{path}: search.algorithm bohb needs hpbandster: pip install -r requirements-search.txt"


def test_missing_space_file(tmp_path):
    with pytest.raises(InputError, match="no such search-space file"):
        load_space(tmp_path / "none.yaml")


@pytest.mark.parametrize("text, escape", [("", None), ("gates: {escape: null}\n", None),
                                          ("gates: {escape: 0.1}\n", 0.1), ("gates: {escape: 0}\n", 0)])
def test_escape_gate_is_off_unless_given(tmp_path, text, escape):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    assert load_space(path).gates.escape == escape


@pytest.mark.parametrize("text, words", [("gates: {escape: high}\n", ["gates.escape", "a number or null"]),
                                         ("gates: {escape: true}\n", ["gates.escape", "a number or null"]),
                                         ("gates: {escape: .inf}\n", ["'gates'", "finite thresholds"])])
def test_bad_escape_gate_names_file_and_key(tmp_path, text, words):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as e:
        load_space(path)
    assert str(e.value).startswith(str(path)) and all(w in str(e.value) for w in words), str(e.value)


def test_a_model_based_search_with_too_few_trials_gets_a_warning():
    from tune_p7.space.search_settings import MEASURED_MIN_TRIALS, SearchSettings, search_warnings

    assert search_warnings(SearchSettings(), 5) == []  # random search: nothing to warn about
    never = search_warnings(SearchSettings(algorithm="optuna", n_startup_trials=10), 8)
    assert len(never) == 1 and "model never chooses a trial" in never[0]
    few = search_warnings(SearchSettings(algorithm="bohb"), MEASURED_MIN_TRIALS - 1)
    assert len(few) == 1 and "random search + ASHA" in few[0] and few[0].startswith("warning:")
    assert search_warnings(SearchSettings(algorithm="hyperopt", n_initial_points=20), MEASURED_MIN_TRIALS) == []
