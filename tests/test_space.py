"""Search spaces: the shipped files load; every kind of mistake names the file and the key."""
from pathlib import Path

import pytest
from ray import tune

from tune_p7.config import P7Config
from tune_p7.errors import InputError
from tune_p7.space import load_space, trial_config

SPACES = Path(__file__).resolve().parent.parent / "search_spaces"


def test_seed_grid_is_exactly_the_four_runs():
    s = load_space(SPACES / "seed_grid.yaml")
    assert [(r["context_length"], r["margin"], r["lambda_init"]) for r in s.runs] == \
        [(5, 0.07, 0.8), (5, 0.07, 0.6), (5, 0.10, 0.8), (7, 0.07, 0.8)]
    ps = s.param_space()
    assert ps["run"] == tune.grid_search(s.runs)
    assert trial_config({"epochs": 10, "run": s.runs[3]}) == {"epochs": 10, "context_length": 7, "margin": 0.07,
                                                               "lambda_init": 0.8}


def test_wide_and_smoke_load():
    wide = load_space(SPACES / "wide.yaml")
    assert sorted(wide.values_of("context_length")) == [3, 5, 7]
    assert set(wide.values_of("arch")) == {"transformer", "lstm"}
    assert isinstance(wide.param_space()["lr"], tune.search.sample.Float)
    smoke = load_space(SPACES / "smoke.yaml")
    assert smoke.scheduler.name == "asha"


def test_override_fixes_epochs_everywhere():
    s = load_space(SPACES / "seed_grid.yaml").override(epochs=2, seed=None)
    assert s.values_of("epochs") == [2]


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
    ("params: {lambda_init: 0.95}\n", ["lambda_init 0.95 is outside"]),
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
    with pytest.raises(InputError) as e:
        load_space(path)
    msg = str(e.value)
    assert msg.startswith(str(path)) and "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_a_model_based_search_turns_grids_into_choices_and_fills_points_with_defaults(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("num_samples: 8\nparams:\n  margin: {grid: [0.05, 0.07]}\n  lr: {loguniform: [1.0e-4, 1.0e-3]}\n"
                    "search: {algorithm: optuna, seed: 2, points_to_evaluate: [{}, {margin: 0.05, lr: 2.0e-4}]}\n")
    s = load_space(path)
    assert s.search.algorithm == "optuna" and s.search.seed == 2 and s.search.n_startup_trials == 10
    assert s.search.points_to_evaluate == ({"margin": 0.07, "lr": 5e-4}, {"margin": 0.05, "lr": 2e-4})
    margin = s.param_space()["margin"]
    assert isinstance(margin, tune.search.sample.Categorical) and margin.categories == [0.05, 0.07]
    assert load_space(SPACES / "smoke.yaml").param_space()["margin"] == tune.grid_search([0.07, 0.10])
    assert s.override(lr=3e-4, seed=None).search.points_to_evaluate == ({"margin": 0.07}, {"margin": 0.05})


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
