"""Search's typed options: defaults, ranges, and where --address comes from when it is not given."""
import pytest

from tune_p7.errors import InputError
from tune_p7.search_options import parse


def test_defaults_are_the_dataclass_fields(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    o = parse([])
    assert o.address is None and o.storage == "./ray_results" and o.max_failures == 2 and not o.verbose


@pytest.mark.parametrize("argv, reuse", [([], True), (["--reuse-actors"], True), (["--no-reuse-actors"], False)])
def test_trials_reuse_workers_unless_told_not_to(argv, reuse):
    """A flag that is on by default has its --no- form; an off one (--verbose) has none."""
    assert parse(argv).reuse_actors is reuse
    with pytest.raises(SystemExit):
        parse(["--no-verbose"])


@pytest.mark.parametrize("env, given, expected", [
    ("127.0.0.2:6379", None, "127.0.0.2:6379"),  # inside a `ray job submit` job: join the cluster it runs on
    ("auto", None, "auto"),
    ("127.0.0.2:6379", "10.0.0.1:6379", "10.0.0.1:6379"),  # --address wins
    ("http://127.0.0.1:8265", None, None),  # the job API's address (`ray job ...`), not a cluster to join
    ("HTTPS://head:8265", None, None),
    ("local", None, None),  # Ray's own word for "start a local Ray"
    ("", None, None),
    ("  ", None, None),
])
def test_address_defaults_to_ray_address_when_it_names_a_cluster(monkeypatch, env, given, expected):
    monkeypatch.setenv("RAY_ADDRESS", env)
    assert parse([] if given is None else ["--address", given]).address == expected


@pytest.mark.parametrize("argv, flag", [(["--epochs", "0"], "--epochs"), (["--max-failures", "-1"], "--max-failures"),
                                        (["--cpus-per-trial", "0"], "--cpus-per-trial")])
def test_out_of_range_values_are_refused_naming_the_flag(argv, flag):
    with pytest.raises(InputError, match=flag):
        parse(argv)
