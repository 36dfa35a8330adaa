"""A continued random search draws configurations no earlier trial ran (the end-to-end continuation:
tests/test_search_tools.py)."""
import json

import pytest

from tune_p7.errors import InputError
from tune_p7.space.file import load_space
from tune_p7.tuning.continuation import fresh_configs, random_searcher, relative_dir


@pytest.fixture
def six(tmp_path):
    """A random space of 2 x 3 = 6 configurations."""
    path = tmp_path / "space.yaml"
    path.write_text("num_samples: 2\nparams: {epochs: 2, margin: {grid: [0.05, 0.07]}, "
                    "lr: {choice: [1.0e-3, 2.0e-3, 3.0e-3]}}\nsearch: {seed: 3}\n")
    return load_space(path)


def key(config):
    return json.dumps({k: config[k] for k in ("margin", "lr")}, sort_keys=True)


def test_new_random_configurations_repeat_no_earlier_one_until_the_space_is_exhausted(six):
    prior = [{"config": c} for c in fresh_configs(six.param_space(), [], 4, seed=0)]
    assert len({key(p["config"]) for p in prior}) == 4
    new = fresh_configs(six.param_space(), prior, 2, seed=1)
    assert len({key(c) for c in new + [p["config"] for p in prior]}) == 6  # all six, none twice
    with pytest.raises(InputError, match="only 2 configurations not run yet, not 3"):
        fresh_configs(six.param_space(), prior, 3, seed=1)


def test_a_continued_random_search_runs_its_new_configurations_as_tunes_points_to_evaluate(six):
    prior = [{"config": c} for c in fresh_configs(six.param_space(), [], 4, seed=0)]
    searcher = random_searcher(six, prior)
    assert type(searcher).__name__ == "BasicVariantGenerator" and len(searcher._points_to_evaluate) == 2
    assert not {key(c) for c in searcher._points_to_evaluate} & {key(p["config"]) for p in prior}


def test_an_earlier_search_s_trial_is_reached_from_the_continued_one():
    assert relative_dir("/r/b", "/r/a", "trial_1") == "../a/trial_1"
    assert relative_dir("s3://bucket/r/b", "s3://bucket/r/a", "trial_1") == "../a/trial_1"
    assert relative_dir("/r/b", "/r/b", "trial_1") == "trial_1"
