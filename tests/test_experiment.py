"""The experiment folder: each file's reader returns what its writer wrote, or None before; the names are those
experiments stored by earlier versions hold, so they still summarize and resume."""
import io
import json

import pandas as pd

from tune_p7 import experiment
from tune_p7.experiment import Experiment

# the files of an experiment folder as every earlier tune_p7 named them
EARLIER = {"tune_p7_search.json", "probe.json", "probe.md", "summary.parquet", "summary.md", "summary.html",
           "importance.json", "confirm.json", "confirm.parquet", "confirm_articles.parquet", "evaluation.parquet",
           "evaluation.md", "tracking.json", "mlflow.db", "optuna_journal.log", "space.yaml", "result.json",
           "curves.png", "margin_vs_params.png", "r_at_5_vs_params.png", "importance.png", "parallel_coordinates.png"}


def parquet(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def test_the_names_are_those_of_experiments_stored_before():
    assert set(experiment.FILES) == EARLIER and experiment.CONFIRM_FOLDER == "confirm"


def test_each_reader_is_none_before_its_writer_and_returns_what_it_wrote(tmp_path):
    folder = Experiment.at(str(tmp_path), "exp")
    assert folder.path == str(tmp_path / "exp") and folder.name == "exp" and not folder.exists()
    assert (folder.record(), folder.probe(), folder.probe_md(), folder.plan(), folder.tracking(),
            folder.importance(), folder.evaluation_md(), folder.confirmed_articles()) == (None,) * 8
    assert not folder.has_ranked() and not folder.has_confirmed()

    folder.write_record({"space": "s.yaml", "ended": {"search": "now"}})
    folder.write_probe({"splits": {}}, "## Probe")
    ranked = pd.DataFrame({"trial_id": ["a", "b"], "rank": [1, 2]})
    folder.write_summary(parquet(ranked), "# summary", "<html>")
    folder.write_plan({"top": 1, "seeds": 2})
    folder.write_confirmed(parquet(ranked), parquet(ranked.assign(article=[3, 4])))
    folder.write_evaluation(parquet(ranked), "## Evaluation")
    folder.write_tracking({"parent_run_id": "r"})
    folder.write_importance({"importance": {}})
    copy = folder.write_space_copy(b"params: {}\n")

    assert folder.record()["ended"] == {"search": "now"} and folder.probe() == {"splits": {}}
    assert folder.probe_md() == "## Probe" and folder.evaluation_md() == "## Evaluation"
    pd.testing.assert_frame_equal(folder.ranked(), ranked)
    assert folder.plan() == {"top": 1, "seeds": 2} and folder.tracking() == {"parent_run_id": "r"}
    assert folder.confirmed_articles()["article"].tolist() == [3, 4] and len(folder.confirmed()) == 2
    assert folder.space_copy({"space_copy": copy}) == b"params: {}\n" and folder.space_copy({}) is None
    assert json.loads((tmp_path / "exp" / "tune_p7_search.json").read_text())["space"] == "s.yaml"
    assert (tmp_path / "exp" / "summary.html").read_text() == "<html>"


def test_trial_results_skip_a_torn_line_and_only_folders_with_results_count(tmp_path):
    folder = Experiment(str(tmp_path))
    (tmp_path / "t1").mkdir()
    (tmp_path / "t1" / "result.json").write_text('{"epoch": 1}\n{"epoch": 2}\n{"epo')
    (tmp_path / "confirm").mkdir()  # a folder without result lines of its own
    assert folder.trial_results("t1") == [{"epoch": 1}, {"epoch": 2}] and folder.trial_results("t9") == []
    assert folder.every_trial_results() == {"t1": [{"epoch": 1}, {"epoch": 2}]}


def test_an_optuna_journal_is_a_local_file_only():
    assert Experiment("/x/exp").journal() == "/x/exp/optuna_journal.log"
    assert Experiment("s3://bucket/exp").journal() is None


def test_a_folder_at_a_storage_keeps_the_name_as_given_for_tune(tmp_path):
    """Tune's trials go to ROOT/NAME as given: a symlinked folder or an ``a/b`` name is not resolved away from it."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert Experiment.at(str(tmp_path), "link").path == str(tmp_path / "link")
    assert Experiment.at(str(tmp_path), "proj/run1").path == str(tmp_path / "proj" / "run1")
    assert Experiment.at("s3://bucket/exp/", "run1").path == "s3://bucket/exp/run1"
