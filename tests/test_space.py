"""Search spaces: the shipped files load; every kind of mistake names the file and the key."""
from pathlib import Path

import pytest
from ray import tune

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


def test_confirm_defaults_to_top_3_by_5_seeds_and_top_0_turns_it_off(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("params: {epochs: 2}\n")
    assert (load_space(path).confirm.top, load_space(path).confirm.seeds) == (3, 5)
    path.write_text("confirm: {top: 0}\n")
    assert load_space(path).confirm.top == 0
    smoke = load_space(SPACES / "smoke.yaml").confirm
    assert smoke.top * smoke.seeds <= 3  # the README's first command stays quick


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
    ("confirm: {tops: 3}\n", ["unknown key 'confirm.tops'"]),
    ("confirm: {top: -1}\n", ["confirm.top", ">= 0"]),
    ("confirm: {seeds: 0}\n", ["confirm.seeds", ">= 1"]),
    ("confirm: {seeds: 2.5}\n", ["confirm.seeds", "expected int"]),
    ("confirm: 3\n", ["'confirm' must be a mapping"]),
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


def test_missing_space_file(tmp_path):
    with pytest.raises(InputError, match="no such search-space file"):
        load_space(tmp_path / "none.yaml")
