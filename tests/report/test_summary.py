"""The summary of a real 40-trial search on tiny synthetic data: readable plots, a short table formatted per
column, one self-contained page; and what other parts of the search write (probe warnings and oracle, precision,
retrieval without the query's context, gate stops while learning) rendered from hand-made files."""
import io
import json
import re
import shutil

import pandas as pd
import pytest
from PIL import Image

from conftest import REPO, make_store, run_cli
from evaluation.test_evaluate import s3  # noqa: F401  (moto's S3 server fixture)
from test_report_html import Tags
from tune_p7.evaluation.selection import choose_candidates
from tune_p7.report import importance
from tune_p7.report import summary as summary_module
from tune_p7.report.summary import summarize, table

SPACE = """
num_samples: 10
params:
  d_model: 16
  n_layers: 1
  n_heads: 2
  d_ff: 32
  lstm_layers: 1
  warmup_epochs: 1
  batch_size: 64
  epochs: 2
  arch: {grid: [transformer, lstm]}
  context_length: {grid: [3, 5]}
  lr: {loguniform: [1.0e-4, 1.0e-2]}
  w_margin: {uniform: [0.3, 0.7]}
  temperature: {choice: [0.05, 0.07, 0.1]}
scheduler: {name: fifo}
gates: {margin: -5.0}
checkpoints: {num_to_keep: 1}
"""


@pytest.fixture(scope="module")
def search40(tmp_path_factory, shared_ray):
    """2 x 2 grid points x 10 samples = 40 trials of 2 epochs on a 40-article, 16-d store."""
    root = tmp_path_factory.mktemp("summary")
    store = make_store(root / "tiny.parquet", articles=40, chunks=10, dim=16)
    (root / "space.yaml").write_text(SPACE)
    r = run_cli(REPO / "tune_p7" / "search.py", "--space", root / "space.yaml", "--data", store, "--storage", root,
                "--name", "s40", "--num-cpus", 2, "--max-concurrent", 1, "--confirm-top", 0,
                "--reuse-actors", timeout=600, env=shared_ray)  # 40 short trials: a new worker each would dominate;
    # one worker runs them all (a second one's start, several CPU-s, bought nothing on a busy machine)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return root / "s40", r.stdout


def png_layout(path) -> dict:
    image = Image.open(path)
    return {"width": image.size[0], **json.loads(image.text["Description"])}


def table_rows(md: str) -> list[list[str]]:
    start = md.index("| rank |")
    lines = md[start:].split("\n\n")[0].splitlines()
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines if not ln.startswith("|---")]


def test_forty_trials_give_small_plots_a_short_table_and_one_self_contained_page(search40):
    exp, stdout = search40
    assert len(pd.read_parquet(exp / "summary.parquet")) == 40
    pngs = sorted(exp.glob("*.png"))
    assert {p.name for p in pngs} == {"curves.png", "margin_vs_params.png", "r_at_5_vs_params.png",
                                      "importance.png", "parallel_coordinates.png"}
    for p in pngs:
        assert Image.open(p).size[0] <= 2400, p.name
    for p in ("curves.png", "margin_vs_params.png", "r_at_5_vs_params.png"):
        got = png_layout(exp / p)
        assert all(cols <= 4 for _, cols in got["grid"]), (p, got)
    legend = png_layout(exp / "curves.png")["legend"]
    assert len([e for e in legend if e.startswith("#")]) == 8 and "32 other trials" in legend
    md = (exp / "summary.md").read_text()
    head, *rows = table_rows(md)
    assert len(rows) == 20 and "... and 20 more trials in summary.parquet." in md
    assert head[:7] == ["rank", "trial_id", "arch", "context_length", "temperature", "w_margin", "lr"]
    assert all(re.fullmatch(r"\d\.\d\de-0\d", r[head.index("lr")]) for r in rows)
    assert head[head.index("R@5") + 1] == "DIRECT R@5" and head[head.index("margin") + 1] == "DIRECT margin"
    page = (exp / "summary.html").read_text()
    parser = Tags()
    parser.feed(page)
    images = [a["src"] for t, a in parser.tags if t == "img"]
    assert len(images) == 5 and all(src.startswith("data:image/png;base64,") for src in images)
    assert not [t for t, a in parser.tags if t in ("script", "link", "iframe") or
                any(k in ("href", "src") and not v.startswith("data:") for k, v in a.items())]
    assert "<h2>Data probe" in page and "<table>" in page
    # the console shows the same short table, then where the summary is
    assert stdout.count("\n| ") == 21 and f"{exp / 'summary.html'} (open in a browser)" in stdout
    assert json.loads((exp / "tune_p7_search.json").read_text())["samplers"] == {
        "arch": "grid", "context_length": "grid", "lr": "loguniform", "w_margin": "uniform", "temperature": "choice"}


def rewrite_results(exp, change) -> None:
    for f in exp.glob("*/result.json"):
        rows = [change(json.loads(line)) for line in f.read_text().splitlines()]
        f.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_probe_warnings_oracle_precision_and_retrieval_without_own_context_are_shown(search40, tmp_path):
    exp = tmp_path / "e"
    shutil.copytree(search40[0], exp)
    probe = json.loads((exp / "probe.json").read_text())
    probe["warnings"] = ["warning: the drift gate (0.05) would stop the oracle: its val cos_anchor is -0.66"]
    probe["splits"]["val"]["oracle"] = {"cos_next": 1.0, "cos_prev": 0.3, "margin": 0.7, "cos_anchor": -0.66,
                                        "gate": "drift", "verdict": "FAIL"}
    (exp / "probe.json").write_text(json.dumps(probe))
    record = json.loads((exp / "tune_p7_search.json").read_text())
    (exp / "tune_p7_search.json").write_text(json.dumps({**record, "precision": {"requested": "auto",
                                                                                   "used": "fp32"}}))
    rewrite_results(exp, lambda r: {**r, "r_at_5_xctx": r["r_at_5"] / 2, "direct_r_at_5_xctx": 0.01,
                                    "mrr_at_10_xctx": r["mrr_at_10"] / 2, "direct_mrr_at_10_xctx": 0.005})
    summarize(str(exp))
    md = (exp / "summary.md").read_text()
    assert md.index(probe["warnings"][0]) < md.index("## Trials, ranked")
    assert "precision requested auto, used fp32" in md.split("## ")[0]
    bank = probe["splits"]["val"]["bank"]
    assert f"the val bank holds {bank} chunks" in md
    head, *rows = table_rows(md)
    assert head[head.index("R@5 xctx") + 1] == "DIRECT R@5 xctx" and rows[0][head.index("DIRECT R@5 xctx")] == "0.0100"
    assert head[head.index("contrastive acc") + 1] == "DIRECT contrastive acc" and "copy rate" in head
    assert all(0 <= float(r[head.index("contrastive acc")]) <= 1 for r in rows)
    # the probe's references, the kNN-successor among them, and its closing sentence come before the ranked table
    assert "| kNN-successor |" in md and "kNN-successor: margin" in md
    assert md.index(probe["closing"]) < md.index("## Trials, ranked")
    page = (exp / "summary.html").read_text()
    assert page.index(probe["warnings"][0]) < page.index("<table>")
    panels = {p["title"]: p["labels"] for p in png_layout(exp / "curves.png")["panels"]}
    assert any("oracle -0.66" in label for label in panels["val cos_anchor"])
    assert any("oracle 0.70" in label for label in panels["val margin"])


def test_summary_survives_a_torn_result_line(search40, tmp_path):
    exp = tmp_path / "e"
    shutil.copytree(search40[0], exp)
    before = pd.read_parquet(exp / "summary.parquet").set_index("trial_id")["stopped_epoch"]
    victim = next(exp.glob("*/result.json"))
    with open(victim, "a") as f:
        f.write('{"epoch": 3, "margin": 0.')  # a write cut off by a crash
    summarize(str(exp))
    after = pd.read_parquet(exp / "summary.parquet").set_index("trial_id")["stopped_epoch"]
    assert len(after) == 40 and after.sort_index().equals(before.sort_index())  # the torn line is skipped


def test_summarizing_again_with_what_it_wrote_writes_the_same_summary_and_draws_nothing(search40, tmp_path,
                                                                                       monkeypatch):
    exp = tmp_path / "e"
    shutil.copytree(search40[0], exp)
    summarize(str(exp))
    written = {p.name: p.read_bytes() for p in exp.iterdir() if p.is_file()}
    assert {"curves.png", "importance.png", "parallel_coordinates.png"} <= set(written)

    def drawn(*args, **kwargs):
        raise AssertionError("summarize(reuse=True) drew or fitted again")

    for module, name in ((summary_module, "plots"), (importance, "importances"), (importance, "bar_plot"),
                         (importance, "parallel_plot")):
        monkeypatch.setattr(module, name, drawn)
    summarize(str(exp), reuse=True)
    assert {p.name: p.read_bytes() for p in exp.iterdir() if p.is_file()} == written


def test_a_summary_without_plots_says_how_to_draw_them_and_never_shows_an_earlier_summarys(search40, tmp_path):
    """A search with --no-plots summarizes with draw=False: every section but the plots, and the command that draws
    them. Plots and an importance report an earlier summary wrote (a search interrupted, then resumed with
    --no-plots) showed other trials: the report is fitted again on these trials, and the plots are deleted."""
    exp = tmp_path / "e"
    shutil.copytree(search40[0], exp)
    stale = json.loads((exp / "importance.json").read_text())
    (exp / "importance.json").write_text(json.dumps({**stale, "n_trials": {"margin": 3, "r_at_5": 3}}))
    assert {"curves.png", "importance.png"} <= {p.name for p in exp.glob("*.png")}
    summarize(str(exp), draw=False)
    md = (exp / "summary.md").read_text()
    assert not list(exp.glob("*.png")) and "## What matters" in md and "see the plots" not in md
    assert json.loads((exp / "importance.json").read_text())["n_trials"] == stale["n_trials"]  # these 40 trials
    assert f"None drawn (the search ran with --no-plots): `python tune_p7/summarize.py {exp.resolve()}` draws " \
           "them." in md
    summarize(str(exp))
    assert {"curves.png", "importance.png", "parallel_coordinates.png"} <= {p.name for p in exp.glob("*.png")}
    assert "None drawn" not in (exp / "summary.md").read_text()


def test_trials_a_gate_stopped_while_they_passed_the_deployment_check_are_counted_and_marked(search40, tmp_path):
    exp = tmp_path / "e"
    shutil.copytree(search40[0], exp)
    summary = pd.read_parquet(exp / "summary.parquet").set_index("trial_id")
    learner, loser = summary.index[:2]

    last = summary["stopped_epoch"]

    def stop(r):
        if r["trial_id"] == learner and r["epoch"] == last[learner]:  # stopped while far above DIRECT on retrieval
            return {**r, "gate": "drift", "r_at_5": r["direct_r_at_5"] + 0.5, "mrr_at_10": r["direct_mrr_at_10"] + 0.5}
        if r["trial_id"] == loser and r["epoch"] == last[loser]:
            return {**r, "gate": "margin", "r_at_5": 0.0, "mrr_at_10": 0.0}
        return r

    rewrite_results(exp, stop)
    summarize(str(exp))
    df = pd.read_parquet(exp / "summary.parquet").set_index("trial_id")
    assert df.loc[learner, "stopped_learning"] and not df.loc[loser, "stopped_learning"]
    gated = df[df["status"] == "gate_stopped"]
    md = (exp / "summary.md").read_text()
    assert (f"Stopped while learning: {int(gated['stopped_learning'].sum())} of {len(gated)} gate-stopped trials "
            "passed the deployment check") in md
    rows = {r[1]: r for r in table_rows(md)[1:]}
    assert rows[learner][-2] == "gate_stopped (drift) \u2020"
    # the loser may rank below the 20 rows of summary.md: its row in the whole table
    ranked = pd.read_parquet(exp / "summary.parquet")
    every = {r[1]: r for r in table_rows(table(ranked, {}, limit=None))[1:]}
    assert len(every) == 40 and every[loser][-2] == "gate_stopped (margin)"


def test_an_errored_trial_ranks_below_every_other_and_is_no_candidate(search40, tmp_path):
    """A trial whose loss turned NaN keeps the margins of its earlier epochs; however good they were, it ranks
    below every trial that did not error, and evaluate never chooses it."""
    exp = tmp_path / "e"
    shutil.copytree(search40[0], exp)
    before = pd.read_parquet(exp / "summary.parquet")
    full = before[before["stopped_epoch"] == 2]
    victim, last = full["trial_id"].iloc[-1], before.set_index("trial_id")["stopped_epoch"]

    def diverge(r):
        if r["trial_id"] != victim:
            return r
        if r["epoch"] < last[victim]:  # the best margin of the whole search, then NaN
            return {**r, "margin": 0.95, "r_at_5": 1.0, "mrr_at_10": 1.0}
        return {**r, "margin": float("nan"), "error": "training loss became nan in epoch 2"}

    rewrite_results(exp, diverge)
    summarize(str(exp))
    df = pd.read_parquet(exp / "summary.parquet")
    row = df.set_index("trial_id").loc[victim]
    assert row["status"] == "errored" and row["best_margin"] == pytest.approx(0.95)
    assert row["best_margin"] > df[df["trial_id"] != victim]["best_margin"].max()
    assert row["rank"] == len(df) and (df[df["trial_id"] != victim]["status"] != "errored").all()
    candidates, skipped = choose_candidates(str(exp), df, top=len(df))
    assert victim not in {c.trial_id for c in candidates} and any(victim in s for s in skipped)


def test_the_summary_and_its_page_are_built_from_an_experiment_on_s3(search40, s3):  # noqa: F811
    import pyarrow.fs as pafs

    fs, _ = pafs.FileSystem.from_uri("s3://p7-eval/x")
    pafs.copy_files(str(search40[0]), "p7-eval/s40", source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=fs)
    for name in ("summary.md", "summary.html", "curves.png"):
        s3.delete_object(Bucket="p7-eval", Key=f"s40/{name}")
    summarize("s3://p7-eval/s40")
    page = s3.get_object(Bucket="p7-eval", Key="s40/summary.html")["Body"].read().decode()
    assert page.count('src="data:image/png;base64,') == 5  # curves, margin and R@5 vs params, importance, parallel coordinates
    png = s3.get_object(Bucket="p7-eval", Key="s40/curves.png")["Body"].read()
    assert Image.open(io.BytesIO(png)).size[0] <= 2400


def test_trials_rank_like_evaluate_chooses_deployment_check_then_verdict_then_best_margin():
    from tune_p7.report.summary import rank

    df = pd.DataFrame({"trial_id": ["pass_no_deploy", "marginal_deploys", "pass_deploys"],
                       "verdict": ["PASS", "MARGINAL", "PASS"], "deploy_ok": [False, True, True],
                       "best_margin": [0.4, 0.15, 0.25]})
    assert rank(df)["trial_id"].tolist() == ["pass_deploys", "marginal_deploys", "pass_no_deploy"]


@pytest.mark.parametrize("tune_status, epoch, finished, expected", [
    ("PAUSED", 1, True, "bracket_ended"),  # a search that ended by itself: its scheduler ended the trial
    ("PAUSED", 3, True, "completed"),
    ("PAUSED", 1, False, "unfinished"),  # a signal ended the search: the trial was cut short
    ("RUNNING", 1, False, "unfinished"),
    ("TERMINATED", 1, True, "asha_stopped"),
])
def test_a_trial_stored_paused_is_unfinished_only_when_the_search_did_not_end_by_itself(tune_status, epoch, finished,
                                                                                      expected):
    assert summary_module.classify(tune_status, {"epoch": epoch}, 3, finished)[0] == expected
