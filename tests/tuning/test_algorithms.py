"""How many trials a search runs at once (tune_p7.tuning.algorithms.max_concurrent). The default's effect on a real
search: test_trials_as_short_as_a_workers_start_run_on_one_worker_per_cpu_and_none_is_thrown_away in
tests/test_search_tools.py."""
import pytest
from ray.tune.search import BasicVariantGenerator, Searcher

from tune_p7.space.file import load_space
from tune_p7.tuning.algorithms import limited, max_concurrent, slots


def space_file(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return load_space(path)


def pausing(tmp_path, name):
    if name == "bohb":
        return space_file(tmp_path, "params: {epochs: 3, lr: {loguniform: [1.0e-4, 1.0e-2]}}\nsearch: {algorithm: bohb}\n")
    return space_file(tmp_path, "params: {epochs: 4, lr: 0.005}\nnum_samples: 4\n"
                                f"scheduler: {{name: {name}, mutations: {{lr: {{uniform: [0.0001, 0.01]}}}}}}\n"
                                "checkpoints: {num_to_keep: 3}\n")


def test_a_number_given_is_the_limit_whatever_the_scheduler(tmp_path):
    assert max_concurrent(3, 1.0) == 3
    assert max_concurrent(3, 0.5, pausing(tmp_path, "pbt")) == 3


@pytest.mark.parametrize("name", ["bohb", "pbt", "pb2"])
def test_schedulers_that_pause_trials_keep_tunes_default_of_no_limit(tmp_path, name):
    space = pausing(tmp_path, name)
    assert space.search.algorithm == name or space.scheduler.name == name
    assert max_concurrent(0, 1.0, space) is None  # a limit on live trials could leave only paused ones


def test_the_default_is_the_trials_the_cluster_cpus_hold():
    assert slots(2.0, 1.0) == 2 and slots(2.0, 0.5) == 4 and slots(3.0, 2.0) == 1
    assert slots(2.0, 0.1) == 20 and slots(0.6, 0.2) == 3  # fractions summed exactly, not floored one short
    assert slots(0.0, 1.0) is None and slots(0.5, 1.0) is None  # no CPU yet (an autoscaling head): no limit


def test_a_random_generator_given_to_tune_carries_the_limit_itself():
    """Tune ignores max_concurrent_trials, with a warning, for a BasicVariantGenerator it is given (a seeded random
    search, a random continuation); a Searcher and Tune's own default generator take it from TuneConfig."""
    seeded = BasicVariantGenerator(random_state=0)
    alg, limit = limited(seeded, 2)
    assert alg is seeded and alg.max_concurrent == 2 and limit is None
    searcher = Searcher()
    assert limited(searcher, 2) == (searcher, 2) and limited(None, 2) == (None, 2)
    assert limited(seeded, None) == (seeded, None)
