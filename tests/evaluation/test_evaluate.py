"""Model selection: a real (small) search, then ``python -m tune_p7.evaluation.evaluate`` on held-out data, the export
reloaded in a fresh process, S3 experiments, and one clear line for data that does not fit."""
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO, make_store, run_cli
from tune_p7.core.config import P7Config
from tune_p7.core.model import build_model
from tune_p7.core.ranking import ranked_index
from tune_p7.errors import InputError
from tune_p7.evaluation.evaluate import evaluate
from tune_p7.evaluation.export import load_exported, predict
from tune_p7.tuning import checkpoint

SHOWN = ("margin", "cos_next", "cos_prev", "cos_anchor", "r_at_1", "r_at_5", "r_at_10", "mrr_at_10")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, shared_ray):
    """A 4-trial smoke search (2 epochs) on a 120-article, 32-d synthetic store, then the evaluation CLI."""
    root = tmp_path_factory.mktemp("evaluate")
    store = make_store(root / "s.parquet", articles=120, chunks=16, dim=32, signal=2.0)
    r = run_cli(REPO / "tune_p7" / "search.py", "--space", REPO / "search_spaces" / "smoke.yaml", "--data", store,
                "--storage", root, "--name", "e", "--epochs", 2, "--num-cpus", 2, "--confirm-top", 0,
                "--reuse-actors", "--no-plots", timeout=300, env=shared_ray)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    exp, out = root / "e", root / "exported"
    r = run_cli("-m", "tune_p7.evaluation.evaluate", exp, "--top", 2, "--split", "ood", "--export", out, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return {"root": root, "exp": exp, "out": out, "store": store, "stdout": r.stdout}


def test_evaluation_files_rank_trials_beside_baselines(experiment):
    exp = experiment["exp"]
    df = pd.read_parquet(exp / "evaluation.parquet")
    trials = df[df["kind"] == "trial"]
    assert len(trials) == 2 and set(df["model"]) >= {"DIRECT", "centroid", "ridge"}
    assert (df["split"] == "ood").all()
    summary = pd.read_parquet(exp / "summary.parquet")
    assert list(trials["trial_id"]) == [t for t in summary.sort_values("rank")["trial_id"]][:2]
    for m in SHOWN:
        assert np.isfinite(df[m].to_numpy(float)).all(), m
    assert np.isfinite(trials[["direct_r_at_5", "direct_mrr_at_10", "cos_raw_anchor", "val_margin"]]
                       .to_numpy(float)).all()
    direct = df[df["model"] == "DIRECT"].iloc[0]  # DIRECT run as a model gives the Evaluator's direct_* numbers
    assert direct["cos_prev"] == pytest.approx(1.0) and direct["r_at_1"] == 0.0
    assert direct["r_at_5"] == pytest.approx(trials.iloc[0]["direct_r_at_5"])
    assert (trials["latency_p50_ms"] > 0).all() and (trials["latency_p95_ms"] >= trials["latency_p50_ms"]).all()
    assert (trials["throughput_qps"] > 0).all() and (trials["throughput_batch"] == 1024).all()
    assert (trials["threads"] == len(os.sched_getaffinity(0))).all()
    assert df["chosen"].sum() == 1 and df.loc[df["chosen"], "kind"].item() == "trial"
    for _, t in trials.iterrows():  # each trial at its best checkpoint by val margin, not its latest
        folders = Path(t["checkpoint"]).parent.glob("checkpoint_*")
        kept = {p.name: checkpoint.load_metrics(p)["margin"] for p in folders}
        assert t["checkpoint"].rsplit("/", 1)[-1] == max(kept, key=kept.get)
    md = (exp / "evaluation.md").read_text()
    assert "## Held-out evaluation (ood split)" in md and "| model |" in md and "**Chosen: trial" in md
    assert "Deployment check" in md and "p95" in md and "queries/s" in md
    assert md.strip() in experiment["stdout"]
    assert "## Held-out evaluation (ood split)" in (exp / "summary.md").read_text()  # summary refreshed


def test_evaluation_rows_carry_retrieval_without_the_query_context(experiment):
    df = pd.read_parquet(experiment["exp"] / "evaluation.parquet").set_index("model")
    xctx = ["r_at_1_xctx", "r_at_5_xctx", "r_at_10_xctx", "mrr_at_10_xctx"]
    assert np.isfinite(df[xctx].to_numpy(float)).all()  # trials, DIRECT, centroid and ridge (from probe.json)
    trials = df[df["kind"] == "trial"]
    assert np.isfinite(trials[["direct_" + m for m in xctx] + ["centroid_" + m for m in xctx]].to_numpy(float)).all()
    for m in ("r_at_1", "r_at_5", "r_at_10", "mrr_at_10"):  # leaving the context out can only lift the target
        assert (df[m + "_xctx"] >= df[m]).all(), m
    assert df.loc["DIRECT", "r_at_1_xctx"] == pytest.approx(trials.iloc[0]["direct_r_at_1_xctx"])
    for m in ("margin", "r_at_5", "r_at_5_vs_direct"):  # held-out figures with their article-bootstrap intervals
        assert (trials[m + "_lo"] <= trials[m]).all() and (trials[m] <= trials[m + "_hi"]).all(), m


def _plant_val(exp: Path, trial_dir: str, **values) -> None:
    for folder in (exp / trial_dir).glob("checkpoint_*"):
        m = checkpoint.load_metrics(folder)
        (folder / checkpoint.METRICS).write_text(json.dumps({**m, **values}))


def test_the_model_is_chosen_on_val_and_the_held_out_split_only_reported(experiment, tmp_path):
    """Two candidates whose val and held-out orders disagree: the val-best one is chosen, not the ood-best."""
    exp = tmp_path / "e"
    shutil.copytree(experiment["exp"], exp)
    trials = pd.read_parquet(exp / "evaluation.parquet").query("kind == 'trial'").set_index("trial_id")
    ood_order = ranked_index(trials)  # what choosing on the held-out figures would pick first
    ood_best, val_best = ood_order[0], ood_order[1]
    dirs = pd.read_parquet(exp / "summary.parquet").set_index("trial_id")["trial_dir"]
    # the checkpoints' val metrics (metrics.json) are what selection reads: make val disagree with ood
    _plant_val(exp, dirs[val_best], margin=0.5, cos_next=0.9, cos_anchor=0.9, r_at_5=1.0, mrr_at_10=1.0)
    _plant_val(exp, dirs[ood_best], margin=-0.5, cos_next=0.0, cos_anchor=0.0, r_at_5=0.0, mrr_at_10=0.0)
    df = evaluate(str(exp), top=2, refresh_summary=False)
    chosen = df[df["chosen"]].iloc[0]
    assert chosen["model"] == val_best != ood_best
    assert chosen["val_verdict"] == "PASS" and bool(chosen["val_deploy_ok"]) and chosen["val_margin"] == 0.5
    assert "chosen on val" in (exp / "evaluation.md").read_text()


def test_export_reloads_in_a_fresh_process_with_the_same_predictions(experiment):
    out, root = experiment["out"], experiment["root"]
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "example.py", "metrics.json", "model.pt"]
    weights = torch.load(out / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in weights.values())
    meta = json.loads((out / "metrics.json").read_text())
    df = pd.read_parquet(experiment["exp"] / "evaluation.parquet")
    chosen = df[df["chosen"]].iloc[0]
    assert meta["trial_id"] == chosen["trial_id"] and meta["split"] == "ood"
    assert meta["held_out"]["margin"] == pytest.approx(chosen["margin"]) and "margin" in meta["val"]
    # in-process reference: straight from the trial's checkpoint, not from the export
    state = checkpoint.load(chosen["checkpoint"])
    cfg = P7Config.from_dict(state["config"])
    model = build_model(cfg, 32)
    model.load_state_dict(state["model"])
    context = np.random.default_rng(1).standard_normal((7, cfg.context_length, 32)).astype(np.float32)
    np.save(root / "context.npy", context)
    expected = predict(model.eval(), context)
    assert np.allclose(predict(load_exported(out)[0], context), expected, atol=1e-6)
    r = run_cli(out / "example.py", root / "context.npy", root / "pred.npy", cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "prediction (7, 32)" in r.stdout
    got = np.load(root / "pred.npy")
    assert np.allclose(got, expected, atol=1e-5) and np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-4)
    r = run_cli(out / "example.py", cwd=root)  # no arguments: random unit vectors
    assert r.returncode == 0 and "prediction (32,), norm 1.0" in r.stdout, r.stdout + r.stderr


def _npz(path, n, k, d, seed=0):
    rng = np.random.default_rng(seed)
    np.savez(path, contexts=rng.standard_normal((n, k, d)).astype(np.float32),
             targets=rng.standard_normal((n, d)).astype(np.float32))


def test_data_without_the_split_is_one_clear_line(experiment, tmp_path):
    _npz(tmp_path / "train.npz", 40, 5, 32)
    _npz(tmp_path / "val.npz", 20, 5, 32, seed=1)
    r = run_cli("-m", "tune_p7.evaluation.evaluate", experiment["exp"], "--data", tmp_path, "--split", "test")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "no 'ood' split (it has train, val)" in r.stderr and "--split val" in r.stderr


def test_checkpoints_that_do_not_fit_the_data_are_refused_before_evaluating(experiment, tmp_path):
    exp = experiment["exp"]
    before = (exp / "evaluation.parquet").stat().st_mtime_ns
    other = make_store(tmp_path / "d16.parquet", articles=60, chunks=12, dim=16)
    with pytest.raises(InputError, match="dimension 16, but trial .* was trained on dimension 32"):
        evaluate(str(exp), top=2, data=str(other), refresh_summary=False)
    for name in ("train", "val", "ood"):  # the trials use context length 5; this data holds 3
        _npz(tmp_path / f"{name}.npz", 30, 3, 32, seed=len(name))
    with pytest.raises(InputError, match="needs context length 5: context length 5 requested but the file holds "
                                         "contexts of 3 chunks"):
        evaluate(str(exp), top=1, data=str(tmp_path / "train.npz"), refresh_summary=False)
    with pytest.raises(InputError, match="no such experiment"):
        evaluate(str(tmp_path / "missing"), refresh_summary=False)
    with pytest.raises(InputError, match="--top"):
        evaluate(str(exp), top=0)
    assert (exp / "evaluation.parquet").stat().st_mtime_ns == before  # nothing written


MOTO_FIX = ("CompleteMultipartUploadResponse", "CompleteMultipartUploadResult")


@pytest.fixture
def s3(monkeypatch):
    """moto's S3 server in this process and the AWS_* environment pointing pyarrow at it. moto 5.2.0-5.2.1 name
    the CompleteMultipartUpload root element wrongly (getmoto/moto#10055) and pyarrow then fails every write:
    patched here as in tests/test_cluster.py."""
    pytest.importorskip("moto.server")
    import boto3
    from moto.core import serialize
    from moto.server import ThreadedMotoServer

    body = serialize.S3Serializer._serialize_body

    def fixed(self, b):
        if isinstance(b, dict) and MOTO_FIX[0] in b:
            b = {MOTO_FIX[1]: b[MOTO_FIX[0]]}
        return body(self, b)

    monkeypatch.setattr(serialize.S3Serializer, "_serialize_body", fixed)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
    client.create_bucket(Bucket="p7-eval")
    yield client
    server.stop()


def test_an_experiment_on_s3_is_evaluated_and_exported_there(experiment, s3):
    import pyarrow.fs as pafs

    fs, _ = pafs.FileSystem.from_uri("s3://p7-eval/x")
    pafs.copy_files(str(experiment["exp"]), "p7-eval/exp", source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=fs)
    for name in ("summary.md", "summary.parquet", "evaluation.md"):  # evaluate summarizes first when needed
        s3.delete_object(Bucket="p7-eval", Key=f"exp/{name}")
    df = evaluate("s3://p7-eval/exp", top=1, split="val", export_dir="s3://p7-eval/model")
    trial = df[df["kind"] == "trial"].iloc[0]
    assert trial["checkpoint"].startswith("s3://p7-eval/exp/") and math.isfinite(trial["margin"])
    assert (df["split"] == "val").all()
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="p7-eval")["Contents"]}
    assert {"exp/evaluation.parquet", "exp/evaluation.md", "model/model.pt", "model/config.json",
            "model/metrics.json", "model/example.py"} <= keys
    summary = s3.get_object(Bucket="p7-eval", Key="exp/summary.md")["Body"].read().decode()
    assert "## Held-out evaluation (val split)" in summary
