"""Record a full grid's learning curves into a Parquet table, for replaying searches against it (tune_p7/tuning/replay.py).

    nice -n 19 python bench/record_grid.py --space bench/spaces/grid_synth.yaml --synth 200:24:64:2.0:0 \\
        --seeds 0 1 --workers 2 --out bench/results/grid_synth.parquet
    nice -n 19 python bench/record_grid.py --space bench/spaces/grid_pydocs.yaml --data data/pydocs.parquet \\
        --seeds 0 1 --workers 2 --out bench/results/grid_pydocs.parquet

Every configuration of the space's grid (a ``{grid: [...]}`` key each; plain values fixed) is trained with each
seed for all its epochs (FIFO, no gates: tune_p7.core.loop.fit called directly in ``--workers`` processes of one torch
thread each, no Ray), in grid order, seeds innermost. One row per (config, seed, epoch): the grid keys (``config/<key>``, as in Tune's results: a key may share a metric's name,
like ``margin``), every
scalar val/train metric of the epoch (the model-free baselines ``direct_*`` / ``centroid_*`` left out: they are
the same in every row) and ``train_seconds``, the epoch's training time, which the replay charges as its cost.
The table's Parquet metadata holds the space file's text, the command, the data, the machine's load average
during the recording and its wall time. The table is rewritten every ``--flush`` finished runs, so an interrupted
recording keeps what it did; ``--resume`` skips the (config, seed) pairs already in the table and keeps its first
start, its wall time (``wall_s`` counts every part) and each earlier part's end and load in ``earlier_parts``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from tune_p7.cli import read_yaml  # noqa: E402
from tune_p7.tuning.replay_table import Table, objective  # noqa: E402

SKIP = ("direct_", "centroid_")
_DATA = None


def grid(space_file: str) -> tuple[dict, list[str], list[dict]]:
    """(fixed params, grid keys, every configuration of the grid as {key: value}), in grid order."""
    return grid_of(read_yaml(space_file)["params"], space_file)


def grid_of(params: dict, source: str) -> tuple[dict, list[str], list[dict]]:
    """grid() of a space's ``params`` section (``source`` names it in the error)."""
    fixed = {k: v for k, v in params.items() if not isinstance(v, dict)}
    keys = [k for k, v in params.items() if isinstance(v, dict)]
    if any(next(iter(params[k])) != "grid" for k in keys):
        raise SystemExit(f"{source}: every sampled key must be a grid for a full-grid recording")
    configs = [dict(zip(keys, vals)) for vals in itertools.product(*(params[k]["grid"] for k in keys))]
    return fixed, keys, configs


def _init(data_path: str) -> None:
    global _DATA
    import torch

    from tune_p7.data.loading import load
    torch.set_num_threads(1)
    _DATA = load(data_path)


def _run(job: tuple[int, int, dict, dict]) -> list[dict]:
    from tune_p7.core.config import P7Config
    from tune_p7.core.loop import NonFiniteLoss, fit

    cid, seed, values, fixed = job
    cfg = P7Config.from_dict({**fixed, **values, "seed": seed, "threads": 1})
    rows = []

    def keep(m, _state):
        row = {"config_id": cid, "seed": seed, **{f"config/{k}": v for k, v in values.items()}}  # as Tune names them
        row.update({k: float(v) for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                    and not k.startswith(SKIP) and k not in ("threads",)})
        row["epoch"] = int(m["epoch"])
        rows.append(row)
    try:
        fit(cfg, _DATA, keep)
    except NonFiniteLoss:  # the failing epoch was reported (NaN metrics): the table keeps it, a search meets it too
        pass
    return rows


def write(out: Path, rows: list[dict], meta: dict) -> None:
    table = pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           b"tune_p7_grid": json.dumps(meta).encode()})
    tmp = out.with_suffix(".tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, out)


def complete_subgrid(meta: dict, df: pd.DataFrame) -> tuple[dict, pd.DataFrame]:
    """The largest complete sub-grid of an interrupted recording. Runs finish in grid order (the first key
    outermost), so the finished configurations are a prefix: the outer keys keep their first value, one key its
    first m values, the inner keys all theirs. Returns the sub-grid's metadata (its space file rewritten to it) and
    rows."""
    import yaml

    raw = yaml.safe_load(meta["space"])
    keys = meta["grid_keys"]
    sizes = [len(raw["params"][k]["grid"]) for k in keys]
    runs = df.groupby(["config_id", "seed"]).size()
    whole = {int(c) for (c, _), n in runs.items() if n == raw["params"]["epochs"]}
    per = df.groupby("config_id")["seed"].nunique()
    done = {c for c in whole if per[c] == len(meta["seeds"])}
    prefix = next(i for i in range(len(done) + 1) if i not in done)
    inner = int(np.prod(sizes))
    for k, n in zip(keys, sizes):
        inner //= n
        m = min(n, prefix // inner)
        if m:
            raw["params"][k]["grid"] = raw["params"][k]["grid"][:m]
            break
        raw["params"][k] = raw["params"][k]["grid"][0]  # held at its first value
    n_cfg = m * inner
    meta = {**meta, "space": yaml.safe_dump(raw, sort_keys=False), "configurations": n_cfg, "complete": True,
            "subgrid_of": {"configurations": int(np.prod(sizes)), "finished_prefix": prefix},
            "grid_keys": [k for k in keys if isinstance(raw["params"][k], dict)]}
    return meta, df[df["config_id"] < n_cfg]


def synth_store(spec: str) -> str:
    from tune_p7.data.store import write_store
    from tune_p7.data.synth import generate

    a, c, d, s, seed = spec.split(":")
    path = Path(tempfile.mkdtemp(prefix="record_grid_")) / "synth.parquet"
    write_store(path, *generate(int(a), int(c), int(d), forward_signal=float(s), seed=int(seed)))
    return str(path)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", required=True, help="a space file whose sampled keys are all grids")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="article store or NPZ")
    src.add_argument("--synth", help="ARTICLES:CHUNKS:DIM:SIGNAL:SEED of a tune_p7.data.synth store")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", required=True)
    p.add_argument("--flush", type=int, default=40, help="rewrite the table every N finished runs")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--limit", type=int, help="only the first N configurations (a quick check)")
    p.add_argument("--trim", metavar="TABLE", help="write the largest complete sub-grid of --out to TABLE; no run")
    p.add_argument("--diagnose", action="store_true",
                   help="write the metric, mode and Table.diagnostics() into the metadata of --out, a table recorded "
                        "without them; no run")
    a = p.parse_args(argv)
    if a.diagnose:
        t = pq.read_table(a.out)
        meta = json.loads(t.schema.metadata[b"tune_p7_grid"])
        meta["metric"], meta["mode"] = objective(meta)
        meta["diagnostics"] = Table.read(a.out).diagnostics()
        pq.write_table(t.replace_schema_metadata({**t.schema.metadata, b"tune_p7_grid": json.dumps(meta).encode()}),
                       a.out)
        print(f"{a.out}: {meta['diagnostics']}")
        return
    if a.trim:
        t = pq.read_table(a.out)
        meta, df = complete_subgrid(json.loads(t.schema.metadata[b"tune_p7_grid"]), t.to_pandas())
        write(Path(a.trim), df.to_dict("records"), meta)
        print(f"{a.trim}: {meta['configurations']} configurations of {meta['subgrid_of']['configurations']}, "
              f"grid keys {meta['grid_keys']}")
        return
    fixed, keys, configs = grid(a.space)
    configs = configs[:a.limit] if a.limit else configs
    out = Path(a.out)
    earlier = pq.read_table(out) if a.resume and out.exists() else None
    rows = earlier.to_pandas().to_dict("records") if earlier is not None else []
    earlier = json.loads(earlier.schema.metadata[b"tune_p7_grid"]) if earlier is not None else {}
    done = {(int(r["config_id"]), int(r["seed"])) for r in rows}
    jobs = [(i, s, c, fixed) for i, c in enumerate(configs) for s in a.seeds if (i, s) not in done]
    data = synth_store(a.synth) if a.synth else a.data
    meta = {"space_file": str(a.space), "space": Path(a.space).read_text(), "grid_keys": keys,
            "configurations": len(configs), "seeds": a.seeds, "data": a.data or f"tune_p7.data.synth {a.synth}",
            "command": "nice -n 19 python " + shlex.join(["bench/record_grid.py", *(argv or sys.argv[1:])]),
            "niceness": os.nice(0), "workers": a.workers, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "complete": False}
    meta["metric"], meta["mode"] = objective(meta)
    if earlier:  # a resumed recording: its first start; each earlier part's end (wall_s counts from the first start)
        meta.update(started=earlier["started"], earlier_parts=earlier.get("earlier_parts", []) + [
            {k: earlier.get(k) for k in ("command", "finished", "wall_s", "runs_done", "loadavg_1min")}])
    print(f"{len(jobs)} runs to record ({len(configs)} configurations x {len(a.seeds)} seeds, {len(done)} done)",
          flush=True)
    t0, loads = time.perf_counter(), []
    with mp.get_context("spawn").Pool(a.workers, initializer=_init, initargs=(data,)) as pool:
        for n, got in enumerate(pool.imap(_run, jobs), 1):  # imap: results in FIFO (grid) order
            rows.extend(got)
            loads.append(os.getloadavg()[0])
            if n % a.flush == 0 or n == len(jobs):
                meta.update(wall_s=round(time.perf_counter() - t0 + earlier.get("wall_s", 0), 1),
                            runs_done=len(done) + n,
                            loadavg_1min={"min": min(loads), "median": sorted(loads)[len(loads) // 2],
                                          "max": max(loads)},
                            complete=len(done) + n == len(configs) * len(a.seeds),
                            finished=time.strftime("%Y-%m-%d %H:%M:%S"))
                write(out, rows, meta)
                print(f"{len(done) + n}/{len(configs) * len(a.seeds)} runs, {meta['wall_s']:.0f} s, "
                      f"load {loads[-1]:.1f}", flush=True)
    if meta["complete"]:  # what the table can show a multi-fidelity method, in its own metadata
        meta["diagnostics"] = Table.from_frame(pd.DataFrame(rows), keys, meta["metric"], meta["mode"]).diagnostics()
        write(out, rows, meta)
    print(json.dumps({k: v for k, v in meta.items() if k != "space"}, indent=1))


if __name__ == "__main__":
    main()
