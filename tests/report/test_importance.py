"""What matters: hyperparameter importance from a summary table, its plots, and from a real small search."""
import json
import math
import struct

import numpy as np
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from conftest import REPO, run_cli
from tune_p7.report import importance

SEARCH = REPO / "tune_p7" / "search.py"
SAMPLERS = {"lr": "loguniform", "w_teacher": "uniform", "arch": "choice"}


def only_lr_matters(n=40, seed=0) -> pd.DataFrame:
    """A summary table where lr below 1e-5 cannot learn and w_teacher / arch are noise with no effect."""
    rng = np.random.default_rng(seed)
    lr = np.exp(rng.uniform(math.log(1e-7), math.log(3e-3), n))
    learned = np.clip((np.log10(lr) + 5) / 2.5, 0, 1)
    margin = -0.06 + 0.31 * learned + 0.003 * rng.standard_normal(n)
    return pd.DataFrame({"trial_id": [f"t{i}" for i in range(n)], "config/lr": lr,
                         "config/w_teacher": rng.uniform(0.1, 0.3, n), "config/arch": rng.choice(["transformer", "lstm"], n),
                         "config/seed": 0, "config/epochs": 2, "margin": margin, "r_at_5": 0.05 + 0.5 * learned,
                         "status": "completed", "stopped_epoch": 2, "best_margin": margin})


def png_width(path) -> int:
    return struct.unpack(">I", path.read_bytes()[16:20])[0]


@pytest.mark.parametrize("evaluator", importance.EVALUATORS)
def test_only_lr_matters_ranks_lr_first(evaluator):
    report = importance.importances(only_lr_matters(), {"samplers": SAMPLERS}, evaluator)
    for target in ("margin", "r_at_5"):
        imp = report["importance"][target]
        assert list(imp)[0] == "lr" and imp["lr"] > 0.5, imp
        assert math.isclose(sum(imp.values()), 1.0, abs_tol=1e-3)
    assert report["n_trials"] == {"margin": 40, "r_at_5": 40} and report["skipped"] == {}
    assert report["distributions"] == SAMPLERS


def test_section_gives_json_plots_and_markdown(tmp_path):
    lines, files = importance.section(str(tmp_path), only_lr_matters(60), {"samplers": SAMPLERS})
    md = "\n".join(lines)
    saved = json.loads((tmp_path / "importance.json").read_text())
    assert list(saved["importance"]["margin"])[0] == "lr" and saved["evaluator"].startswith("Optuna's fANOVA")
    assert "last reported val metrics" in saved["stopped_trials"]
    assert md.startswith("## What matters") and "| lr | loguniform |" in md
    assert "![importance.png](importance.png)" in md and "![parallel_coordinates.png]" in md
    assert set(files) == {"importance.png", "parallel_coordinates.png"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        assert 20_000 < len(data) and png_width(tmp_path / name) <= 2400


def test_too_few_trials_say_so_and_print_no_numbers(tmp_path):
    lines, files = importance.section(str(tmp_path), only_lr_matters(6), {"samplers": SAMPLERS})
    saved = json.loads((tmp_path / "importance.json").read_text())
    assert saved["importance"] == {} and saved["evaluator"] is None
    assert set(saved["skipped"]) == {"margin", "r_at_5"} and "too few trials: 6" in saved["skipped"]["margin"]
    md = "\n".join(lines)
    assert "not computed: too few trials: 6" in md and "| lr |" not in md
    assert "importance.png" not in files


def test_fewer_than_two_varied_keys_is_skipped():
    df = only_lr_matters().assign(**{"config/w_teacher": 0.2, "config/arch": "transformer"})
    report = importance.importances(df, {"samplers": SAMPLERS})
    assert report["importance"] == {} and "fewer than 2 varied" in report["skipped"]["margin"]


def test_errored_and_nan_trials_are_left_out_and_counted_stopped_ones_kept():
    df = only_lr_matters(16)
    df.loc[0:1, "status"] = "errored"
    df.loc[2, "margin"] = math.nan
    df.loc[3, "status"] = "asha_stopped"
    df.loc[4, "status"] = "gate_stopped"
    df.loc[5, "status"] = "unfinished"
    report = importance.importances(df, {"samplers": SAMPLERS})
    assert report["left_out"] == {"errored": 2, "unfinished": 1}
    assert report["nan"] == {"margin": 1, "r_at_5": 0}
    assert report["n_trials"] == {"margin": 12, "r_at_5": 13} and report["n_stopped"] == 2
    md = "\n".join(importance.markdown(report))
    assert "12 trials for the final val margin" in md and "2 errored, 1 unfinished, 1 with NaN margin" in md


def test_samplers_come_from_the_record_else_the_space_file_else_the_values(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("params:\n  lr: {loguniform: [1.0e-7, 3.0e-3]}\n  w_teacher: {uniform: [0.15, 0.25]}\n"
                     "runs:\n  - {arch: transformer}\n  - {arch: lstm}\n")
    df = only_lr_matters()

    def sampled(record):
        return {k: label for k, (label, _, _) in importance.samplings(df, record).items()}

    assert sampled({"space": str(space)}) == {"lr": "loguniform", "w_teacher": "uniform", "arch": "run"}
    assert sampled({"space": str(space), "samplers": {"lr": "uniform"}}) == {"lr": "uniform", "w_teacher": "uniform",
                                                                            "arch": "run"}
    assert sampled({"space": str(tmp_path / "moved.yaml")}) == {
        "lr": "inferred log range", "w_teacher": "inferred range", "arch": "inferred categorical"}


def test_a_range_is_widened_to_the_values_seen_and_grids_are_categorical():
    def made(*args):
        spec = importance.sampling(*args)
        return spec[0], importance.optuna_distribution(spec)

    label, dist = made([0.1, 0.3], "uniform", [0.15, 0.25])  # the space changed since
    assert label == "uniform" and isinstance(dist, FloatDistribution) and (dist.low, dist.high) == (0.1, 0.3)
    label, dist = made([1e-7, 3e-3], "loguniform", [1e-6, 1e-3])
    assert dist.log and dist.low == 1e-7
    label, dist = made([3, 5, 7, 5], "grid", [3, 5, 7])
    assert isinstance(dist, CategoricalDistribution) and dist.choices == (3, 5, 7)


def test_a_summary_with_too_few_trials_for_importance_does_not_import_optuna():
    """Its import takes 1-2 s, in every search's summary."""
    prog = ("import sys\nimport pandas as pd\nfrom tune_p7.report.importance import importances\n"
            "df = pd.DataFrame({'status': ['completed'] * 3, 'config/lr': [1e-3, 2e-3, 3e-3],"
            " 'config/margin': [0.05, 0.07, 0.1], 'margin': [0.1, 0.2, 0.3], 'r_at_5': [0.3, 0.4, 0.5]})\n"
            "report = importances(df)\nprint(len(report['skipped']), 'optuna' in sys.modules)")
    r = run_cli("-c", prog, timeout=120)
    assert r.returncode == 0 and r.stdout.split() == ["2", "False"], r.stdout + r.stderr[-2000:]


REAL_SPACE = """
num_samples: 6
params:
  d_model: 64
  n_layers: 1
  n_heads: 4
  d_ff: 128
  lstm_layers: 1
  warmup_epochs: 1
  batch_size: 128
  epochs: 2
  lr: {grid: [1.0e-7, 3.0e-3]}
  w_teacher: {uniform: [0.1, 0.3]}
scheduler: {name: fifo}
gates: {drift: -1.0, margin: -2.0}
checkpoints: {num_to_keep: 1}
"""


@pytest.mark.usefixtures("ray_cluster")  # the search joins the session's Ray node (conftest)
def test_a_real_search_where_only_lr_can_learn_ranks_lr_first(tmp_path, strong_store):
    space = tmp_path / "space.yaml"
    space.write_text(REAL_SPACE)  # 12 trials: lr 1e-7 cannot move the weights in 2 epochs, w_teacher is noise
    r = run_cli(SEARCH, "--num-cpus", 2, "--space", space, "--data", strong_store, "--storage", tmp_path,
                "--name", "imp", "--no-probe", "--confirm-top", 0, "--reuse-actors", "--max-concurrent", 1,
                timeout=600)  # 12 trials one after another in one worker: a second worker's start is all it saved
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    exp = tmp_path / "imp"
    saved = json.loads((exp / "importance.json").read_text())
    assert saved["n_trials"] == {"margin": 12, "r_at_5": 12}
    for target in ("margin", "r_at_5"):
        assert list(saved["importance"][target])[0] == "lr", saved
    assert saved["distributions"] == {"lr": "grid", "w_teacher": "uniform"}
    md = (exp / "summary.md").read_text()
    assert "## What matters" in md and "| lr | grid |" in md
    assert (exp / "parallel_coordinates.png").stat().st_size > 10_000
