"""How many trials a search runs at once (tune_p7.tuning.algorithms.max_concurrent). The default's effect on a real
search: test_trials_as_short_as_a_workers_start_run_on_one_worker_per_cpu_and_none_is_thrown_away in
tests/test_search_tools.py."""
import pytest

from conftest import REPO
from tune_p7.space.file import load_space
from tune_p7.tuning.algorithms import max_concurrent


def bohb(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("params: {epochs: 3, lr: {loguniform: [1.0e-4, 1.0e-2]}}\nsearch: {algorithm: bohb}\n")
    return load_space(path)


def test_a_number_given_is_the_limit_whatever_the_scheduler(tmp_path):
    assert max_concurrent(3, 1.0) == 3
    assert max_concurrent(3, 0.5, load_space(REPO / "search_spaces" / "pbt.yaml")) == 3


@pytest.mark.parametrize("name", ["bohb", "pbt"])
def test_schedulers_that_pause_trials_keep_tunes_default_of_no_limit(tmp_path, name):
    space = bohb(tmp_path) if name == "bohb" else load_space(REPO / "search_spaces" / "pbt.yaml")
    assert max_concurrent(0, 1.0, space) is None  # a limit on live trials could leave only paused ones
