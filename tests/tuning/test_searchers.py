"""Model-based searches end to end under a real local Ray: what each searcher is told, and resume."""
import glob
import pickle

import pandas as pd
import pytest

from conftest import run_cli
from test_search import SEARCH, search
from tune_p7.space.file import load_space
from tune_p7.tuning.algorithms import search_algorithm
from tune_p7.tuning.searchers import PruningHyperOptSearch, PruningOptunaSearch, reached_budget

pytestmark = pytest.mark.usefixtures("ray_cluster")  # searches join the session's Ray node (conftest)

# warmup_epochs 0 trials trip the margin gate at epoch 1 (no margin reaches 2.0; the gate is checked once past
# warm-up + grace 0); warmup_epochs 3 trials are never checked and run to epoch 3. The points make both run.
# No confirmation stage: tests/tuning/test_confirm.py tests it, here its 3 x 5 trials would dominate the time.
GATED = """
num_samples: 4
params:
  d_model: 32
  n_layers: 1
  n_heads: 4
  d_ff: 64
  lstm_layers: 1
  batch_size: 128
  epochs: 3
  warmup_epochs: {choice: [0, 3]}
  lr: {loguniform: [5.0e-4, 3.0e-3]}
  margin: {grid: [0.05, 0.07]}
gates: {drift: -1.0, margin: 2.0, grace_epochs: 0}
confirm: {top: 0}
"""


def space_with(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text("params: {epochs: 3, lr: {loguniform: [1.0e-4, 1.0e-2]}}\n" + text)
    return load_space(path)


def started(searcher, space, trial_ids):
    searcher.set_search_properties(space.metric, space.mode, space.param_space())
    return [searcher.suggest(t) for t in trial_ids]


def test_the_space_chooses_the_searcher_and_its_settings(tmp_path):
    assert search_algorithm(space_with(tmp_path, "")) is None  # Tune's default, as before
    assert type(search_algorithm(space_with(tmp_path, "search: {seed: 4}\n"))).__name__ == "BasicVariantGenerator"
    opt = search_algorithm(space_with(tmp_path, "search: {algorithm: optuna, seed: 5, n_startup_trials: 3}\n"))
    assert isinstance(opt, PruningOptunaSearch) and opt._sampler._n_startup_trials == 3
    hyp = search_algorithm(space_with(tmp_path, "search: {algorithm: hyperopt, seed: 5, gamma: 0.4}\n"))
    assert isinstance(hyp, PruningHyperOptSearch) and hyp.algo.keywords["gamma"] == 0.4
    assert type(search_algorithm(space_with(tmp_path, "search: {algorithm: bohb}\n"))).__name__ == "PlainTuneBOHB"


def test_a_random_search_does_not_import_the_model_based_searchers():
    """Their packages (Optuna, HyperOpt, BOHB's ConfigSpace) take 1-2 s to import in every driver."""
    prog = ("import sys\nfrom tune_p7.tuning.algorithms import search_algorithm\nfrom tune_p7.space.file import load_space\n"
            "search_algorithm(load_space('search_spaces/smoke.yaml'))\n"
            "print(sorted(m for m in ('tune_p7.tuning.searchers', 'optuna', 'hyperopt') if m in sys.modules))")
    r = run_cli("-c", prog, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr[-2000:]


def test_a_trial_that_stopped_early_or_tripped_a_gate_is_pruned_in_optuna_at_the_epoch_it_reached(tmp_path):
    space = space_with(tmp_path, "search: {algorithm: optuna, seed: 0}\n")
    searcher = search_algorithm(space)
    started(searcher, space, ["done", "asha", "gated"])
    for trial_id, last in (("done", 3), ("asha", 1), ("gated", 3)):
        for epoch in range(1, last):
            searcher.on_trial_result(trial_id, {"margin": 0.1 * epoch, "epoch": epoch, "config/epochs": 3})
        final = {"margin": 0.1 * last, "epoch": last, "config/epochs": 3,
                 "gate": "margin" if trial_id == "gated" else None}
        assert reached_budget(final) == (trial_id == "done")
        searcher.on_trial_complete(trial_id, result=final)
    told = {t.number: t for t in searcher._ot_study.trials}
    assert [told[i].state.name for i in range(3)] == ["COMPLETE", "PRUNED", "PRUNED"]
    # a pruned trial carries the value at the epoch it reached (Optuna takes the last intermediate value), but
    # TPE ranks every pruned trial below every complete one
    assert [told[i].value for i in range(3)] == pytest.approx([0.3, 0.1, 0.3])
    assert told[1].intermediate_values == {1: pytest.approx(0.1)}  # Tune never passed the stopping result before
    assert told[2].intermediate_values == {1: pytest.approx(0.1), 2: pytest.approx(0.2), 3: pytest.approx(0.3)}


def test_a_journal_trial_asked_after_the_last_saved_state_is_told_fail_on_restore(tmp_path):
    """The journal records every ask at once, Tune saves the searcher's state every few seconds: a trial asked in
    between is RUNNING in the journal and unknown to the restored searcher, which never tells it. It is told FAIL
    (and says why); trials the saved state knows stay RUNNING, to be resumed and told."""
    space = space_with(tmp_path, "search: {algorithm: optuna, seed: 0}\n")
    searcher = search_algorithm(space, str(tmp_path))
    started(searcher, space, ["done", "resumed"])
    searcher.on_trial_complete("done", result={"margin": 0.3, "epoch": 3, "config/epochs": 3})
    searcher.save(str(tmp_path / "state.pkl"))
    searcher.suggest("lost")  # asked after the save; the driver is killed before the next one
    restored = search_algorithm(space, str(tmp_path))
    restored.restore(str(tmp_path / "state.pkl"))
    told = {t.number: t for t in restored._ot_study.trials}
    assert [told[i].state.name for i in range(3)] == ["COMPLETE", "RUNNING", "FAIL"]
    assert "interrupted" in told[2].user_attrs and "interrupted" not in told[1].user_attrs
    restored.on_trial_complete("resumed", result={"margin": 0.2, "epoch": 3, "config/epochs": 3})
    assert restored._ot_study.trials[1].state.name == "COMPLETE"


@pytest.mark.parametrize("algorithm", ["optuna", "hyperopt"])
def test_a_finished_trial_is_told_its_best_epoch_the_value_the_summary_ranks_by(tmp_path, algorithm):
    """The summary ranks by the best val margin of any epoch: a finished trial whose margin peaked at epoch 2
    and fell at epoch 3 is told 0.4, not its last 0.1."""
    space = space_with(tmp_path, f"search: {{algorithm: {algorithm}, seed: 0}}\n")
    searcher = search_algorithm(space)
    started(searcher, space, ["t"])
    for epoch, margin in ((1, 0.2), (2, 0.4)):
        searcher.on_trial_result("t", {"margin": margin, "epoch": epoch, "config/epochs": 3})
    searcher.on_trial_complete("t", result={"margin": 0.1, "epoch": 3, "config/epochs": 3})
    if algorithm == "optuna":
        assert searcher._ot_study.trials[0].value == pytest.approx(0.4)
    else:  # HyperOpt minimises the loss -margin
        assert searcher._hpopt_trials.trials[0]["result"]["loss"] == pytest.approx(-0.4)


def searcher_state(exp) -> dict:
    """The searcher's state Tune saved last with the experiment (what the searcher was told): the newest session's
    (named by its start time; a restore rewrites older ones' times)."""
    path = max(glob.glob(str(exp / "searcher-state-*.pkl")))
    with open(path, "rb") as f:
        return pickle.load(f)


def summary(exp) -> pd.DataFrame:
    return pd.read_parquet(exp / "summary.parquet")


def by_params(df: pd.DataFrame) -> dict:
    return {(r["config/lr"], r["config/margin"], r["config/warmup_epochs"]): r for _, r in df.iterrows()}


@pytest.mark.parametrize("algorithm, extra", [
    ("optuna", "scheduler: {name: fifo}\nsearch: {algorithm: optuna, seed: 1, n_startup_trials: 2, "),
    ("hyperopt", "scheduler: {name: fifo}\nsearch: {algorithm: hyperopt, seed: 1, n_initial_points: 2, "),
    ("bohb", "search: {algorithm: bohb, seed: 1, "),
])
def test_each_algorithm_searches_and_ranks_every_trial_and_a_gated_trial_is_never_told_complete(
        tmp_path, small_store, algorithm, extra):
    sp = tmp_path / "space.yaml"
    sp.write_text(GATED + extra + "points_to_evaluate: [{warmup_epochs: 0}, {warmup_epochs: 3}]}\n")
    # FIFO searchers: trials one after another in one worker (a second worker's start costs several CPU-s); BOHB's
    # brackets pause and resume trials side by side, as it runs by default
    one = ["--max-concurrent", 1] if algorithm != "bohb" else []
    search("--space", sp, "--data", small_store, "--storage", tmp_path, "--name", "s", "--no-probe", "--reuse-actors",
           *one)
    exp = tmp_path / "s"
    df = summary(exp)
    assert len(df) == 4 and df["rank"].tolist() == [1, 2, 3, 4] and df["trial_id"].is_unique
    gated = df[df["config/warmup_epochs"] == 0]
    assert len(gated) >= 1 and (gated["status"] == "gate_stopped").all() and (gated["stopped_epoch"] == 1).all()
    assert set(df[df["config/warmup_epochs"] == 3]["status"]) <= {"completed", "asha_stopped"}
    assert (df["status"] == "completed").any()
    state = searcher_state(exp)
    rows = by_params(df)
    if algorithm == "optuna":
        told = {(t.params["lr"], t.params["margin"], t.params["warmup_epochs"]): t for t in state["_ot_study"].trials}
        assert told.keys() == rows.keys()
        for key, row in rows.items():
            t = told[key]
            if row["status"] == "completed":  # told its best epoch's margin, what the summary ranks by
                assert t.state.name == "COMPLETE" and t.value == pytest.approx(row["best_margin"])
            else:  # the value at the epoch it reached, as an intermediate value of a pruned trial
                assert t.state.name == "PRUNED", (row["status"], t.state)
                assert t.intermediate_values[row["stopped_epoch"]] == pytest.approx(row["margin"])
    elif algorithm == "hyperopt":
        docs = state["_hpopt_trials"].trials
        assert len(docs) == 4
        status = sorted(d["result"]["status"] for d in docs)
        assert status == sorted("ok" if s == "completed" else "fail" for s in df["status"])
        assert all("loss" not in d["result"] for d in docs if d["result"]["status"] == "fail")
        assert sorted(-d["result"]["loss"] for d in docs if d["result"]["status"] == "ok") == \
            pytest.approx(sorted(df[df["status"] == "completed"]["best_margin"]))
    else:  # BOHB is told each rung's result at its budget (epochs 1, 3), never a gated trial's stopping result
        told = {b: len(losses) for b, losses in state["bohber"].losses.items()}
        assert told and set(told) <= {1, 3}, told
        ungated = df[df["config/warmup_epochs"] == 3]
        assert sum(told.values()) <= (ungated["stopped_epoch"] >= 1).sum() + (ungated["stopped_epoch"] >= 3).sum()


@pytest.mark.parametrize("section, words", [
    ("search: {algorithm: smac}", ["search.algorithm", "smac"]),
    ("search: {algorithm: optuna, n_trials: 3}", ["search.n_trials", "unknown key"]),
    ("search: {algorithm: hyperopt, gamma: high}", ["search.gamma", "expected float"]),
    ("search: {algorithm: optuna, points_to_evaluate: [{lr: 1.0e-3, lrr: 2}]}", ["points_to_evaluate[0]", "'lrr'"]),
])
def test_a_bad_search_section_is_one_line_exit_2_and_nothing_written(tmp_path, small_store, section, words):
    sp = tmp_path / "space.yaml"
    sp.write_text("params: {lr: {loguniform: [1.0e-4, 2.0e-3]}}\n" + section + "\n")
    store = tmp_path / "results"
    store.mkdir()
    r = run_cli(SEARCH, "--space", sp, "--data", small_store, "--storage", store, "--name", "x", timeout=120)
    err = r.stderr.strip()
    assert r.returncode == 2 and err.startswith(f"error: {sp}: ") and "\n" not in err, r.stderr
    assert all(w in err for w in words), err
    assert list(store.iterdir()) == []


# The space of issue #36: HyperBandForBOHB leaves the last bracket's trials paused when the searcher runs out of
# samples; Tune stops them but stores them as PAUSED (tune_p7.tuning.ending)
BOHB_UNFILLED = """
num_samples: 6
metric: margin
mode: max
params: {epochs: 3, d_model: 32, n_layers: 1, n_heads: 4, d_ff: 64, lstm_layers: 1, batch_size: 128, warmup_epochs: 1,
  lambda_min: 0.0, lambda_max: 0.95, seed: 0, lambda_init: {uniform: [0.1, 0.88]}, context_length: {choice: [3, 5]},
  arch: {choice: [transformer, lstm]}, lr: {loguniform: [1.0e-5, 3.0e-2]}, temperature: {loguniform: [0.01, 10.0]}}
gates: {drift: 0.05, margin: -2.0, grace_epochs: 1}
checkpoints: {num_to_keep: 1}
search: {algorithm: bohb, seed: 0, reduction_factor: 2}
confirm: {top: 1, seeds: 1}
"""
# another shape: five samples over brackets of reduction 3 and four epochs, LSTMs only
BOHB_OTHER = """
num_samples: 5
params: {epochs: 4, d_model: 16, n_layers: 1, n_heads: 2, d_ff: 32, lstm_layers: 1, batch_size: 128, arch: lstm,
  warmup_epochs: 0, lr: {loguniform: [1.0e-4, 1.0e-2]}, margin: {uniform: [0.02, 0.12]}}
gates: {drift: -1.0, margin: -2.0}
checkpoints: {num_to_keep: 1}
search: {algorithm: bohb, seed: 3, reduction_factor: 3}
confirm: {top: 1, seeds: 1}
"""


@pytest.fixture(scope="module")
def bohb_store(tmp_path_factory):
    from conftest import make_store

    return make_store(tmp_path_factory.mktemp("bohb") / "s.parquet", articles=150, chunks=20, dim=32, signal=1.0,
                      seed=4)


@pytest.mark.parametrize("text", [BOHB_UNFILLED, BOHB_OTHER], ids=["issue36", "rf3"])
def test_a_bohb_search_that_ends_by_itself_is_finished_confirmed_and_a_resume_says_so(tmp_path, bohb_store, text):
    sp = tmp_path / "space.yaml"
    sp.write_text(text)
    r = search("--space", sp, "--data", bohb_store, "--storage", tmp_path, "--name", "b", "--no-probe",
               "--reuse-actors")
    assert "interrupted" not in r.stderr and "Traceback" not in r.stdout + r.stderr, r.stdout[-2000:] + r.stderr[-3000:]
    exp = tmp_path / "b"
    df = summary(exp)
    assert len(df) == int(text.split("num_samples: ")[1].split()[0])
    assert "unfinished" not in set(df["status"]), df[["trial_id", "status", "stopped_epoch"]]
    assert set(df["status"]) <= {"completed", "asha_stopped", "bracket_ended", "gate_stopped"}
    assert (exp / "confirm.parquet").exists() and "## Confirmed" in r.stdout
    again = search("--resume", "--name", "b", "--storage", tmp_path, timeout=120)
    assert again.stdout.strip().splitlines() == [
        f"tune_p7: experiment b is finished, nothing to resume (summary: {exp / 'summary.md'})"]


def earlier(lr: float, margin: float, epochs_run: int, error: bool = False) -> dict:
    """An earlier search's trial as tune_p7.tuning.continuation.prior_trials gives it (3-epoch trials)."""
    results = [{"epoch": e, "margin": -0.1 + 0.01 * e, "config": {}} for e in range(1, epochs_run + 1)]
    return {"trial_id": f"t{lr}", "config": {"lr": lr, "margin": margin, "epochs": 3}, "results": results,
            "error": error}


PRIOR = [earlier(1e-3, 0.05, 3), earlier(2e-3, 0.07, 1), earlier(3e-3, 0.05, 2, error=True)]


@pytest.mark.parametrize("algorithm", ["optuna", "hyperopt"])
def test_a_continued_searcher_is_told_the_earlier_trials_before_its_first_suggestion(tmp_path, algorithm):
    path = tmp_path / "space.yaml"
    path.write_text("params: {epochs: 3, lr: {loguniform: [1.0e-4, 1.0e-2]}, margin: {choice: [0.05, 0.07]}}\n"
                    f"search: {{algorithm: {algorithm}, seed: 0}}\n")
    space = load_space(path)
    searcher = search_algorithm(space, prior=PRIOR)
    started(searcher, space, ["new"])
    if algorithm == "optuna":
        trials = searcher._ot_study.trials
        assert [t.state.name for t in trials[:3]] == ["COMPLETE", "PRUNED", "FAIL"]
        assert trials[0].value == pytest.approx(-0.07) and trials[0].params == {"lr": 1e-3, "margin": 0.05}
        assert trials[1].intermediate_values == {1: pytest.approx(-0.09)}
        assert len(trials) == 4  # and the new suggestion after them
    else:
        docs = [d for d in searcher._hpopt_trials.trials if d["state"] == 2]  # JOB_STATE_DONE
        assert [d["result"]["status"] for d in docs] == ["ok", "fail", "fail"], searcher._hpopt_trials.trials
        assert docs[0]["result"]["loss"] == pytest.approx(0.07) and docs[0]["misc"]["vals"]["margin"] == [0]
        assert len(searcher._hpopt_trials.trials) == 4
