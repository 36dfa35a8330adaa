"""Config: the original's defaults, and unknown keys / bad values named."""
import json

import pytest
from conftest import SMALL, run_cli

from tune_p7.core.config import P7Config
from tune_p7.errors import InputError


def test_defaults_are_the_originals():
    c = P7Config()
    assert (c.d_model, c.n_layers, c.n_heads, c.d_ff, c.dropout, c.lstm_layers) == (512, 4, 8, 2048, 0.1, 2)
    assert (c.lambda_init, c.lambda_min, c.lambda_max, c.temperature, c.margin) == (0.8, 0.6, 0.9, 0.07, 0.07)
    assert (c.w_rank, c.w_margin, c.w_teacher, c.teacher_floor, c.warmup_epochs) == (1.0, 0.5, 0.2, 0.20, 2)
    assert (c.gate_threshold, c.gate_weak_weight) == (0.03, 0.25)
    assert (c.lr, c.weight_decay, c.grad_clip, c.batch_size, c.epochs, c.device) == (5e-4, 1e-4, 1.0, 64, 10, "cpu")


@pytest.mark.parametrize("values, words", [
    ({"lrr": 1e-3}, ["unknown key 'lrr'"]),
    ({"lr": -1.0}, ["'lr'", "out of range"]),
    ({"batch_size": 0}, ["'batch_size'", "out of range"]),
    ({"temperature": -0.1}, ["'temperature'"]),
    ({"margin": -0.1}, ["'margin'"]),
    ({"lambda_init": 1.2}, ["'lambda_init'"]),
    ({"arch": "gru"}, ["'arch'", "gru"]),
    ({"epochs": "ten"}, ["'epochs'", "integer"]),
    ({"dropout": True}, ["'dropout'"]),
    ({"lambda_init": 0.95}, ["lambda_init 0.95 is outside"]),
    ({"d_model": 30, "n_heads": 8}, ["key 'n_heads'", "not divisible"]),
    ({"lambda_init": 0.6}, ["key 'lambda_init'", "within 5% of an end", "[0.6, 0.9]", "cannot move"]),
    ({"lambda_init": 0.605}, ["key 'lambda_init'", "within 5% of an end"]),
    ({"lambda_init": 0.9}, ["key 'lambda_init'", "within 5% of an end"]),
    ({"lambda_min": 0.0, "lambda_max": 1.0, "lambda_init": 0.02}, ["key 'lambda_init'", "within 5% of an end"]),
])
def test_bad_values_name_the_source_and_key(values, words):
    with pytest.raises(InputError) as e:
        P7Config.from_dict(values, source="run.yaml")
    assert str(e.value).startswith("run.yaml: ")
    for w in words:
        assert w in str(e.value)


def test_lambda_may_start_inside_its_range_or_be_fixed():
    assert P7Config.from_dict({"lambda_init": 0.62}).lambda_init == 0.62  # 6.7% of the range above lambda_min
    assert P7Config.from_dict({"lambda_min": 0.7, "lambda_max": 0.7, "lambda_init": 0.7}).lambda_init == 0.7


def test_the_replay_cli_refuses_lambda_on_its_bound(tmp_path, small_store):
    cfg = tmp_path / "params.json"
    cfg.write_text(json.dumps({**SMALL, "lambda_init": 0.6}))
    r = run_cli("-m", "tune_p7.train", "--config", cfg, "--data", small_store, timeout=120)
    err = r.stderr.strip()
    assert r.returncode == 2 and "\n" not in err and "Traceback" not in err, r.stderr
    assert err.startswith(f"error: {cfg}: key 'lambda_init': 0.6 is within 5%"), err
    assert r.stdout == ""  # no epoch trained


def test_round_trip():
    c = P7Config.from_dict({"arch": "lstm", "epochs": 3.0})
    assert c.epochs == 3 and P7Config.from_dict(c.to_dict()) == c
