"""What a PBT / PB2 trial ran, read back from its results: the mutated keys' values per lineage (``schedule``), the
schedule that trained a trial's final model (``trained_schedule``, for the confirmation) and the summary's
"Schedules" section. Pure functions of the result rows (tuning.pbt builds the schedulers, which import Ray's PB2
and scikit-learn: a summary or a confirmation does not need them).
"""
from __future__ import annotations

import pandas as pd

HP = "hp/"  # result key prefix of a trial's current value of a mutated key


def _value(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def schedule(rows: list[dict]) -> list[tuple[int, str | None, dict]]:
    """(first epoch, the trial whose checkpoint it went on from or None, the mutated keys' values) of each lineage a
    trial ran, in the order trained. A lineage runs one config: it changes only when an exploit starts a new one.

    Rows reported again after a restart (``resumed``) count: Tune rewrites a restarted trial's result.json from its
    storage copy, which lags by the sync period, so under PBT's pauses the first report of an epoch can be missing.
    """
    out, seen = [], set()
    for r in rows:
        if r.get("lineage") in seen:
            continue
        seen.add(r.get("lineage"))
        values = {k.removeprefix(HP): v for k, v in r.items() if k.startswith(HP)}
        out.append((r.get("epoch", 0), r.get("exploited_from"), values))
    return out


def trained_schedule(curves: dict[str, list[dict]], trial_id: str) -> list[tuple[int, dict]]:
    """The mutated keys' values epoch by epoch that trained ``trial_id``'s final model: [(first epoch, values)].

    A lineage (one run of weights under one config, see trainable.restore) that began with an exploit went on from
    its parent lineage's checkpoint of ``parent_epoch``; the schedule follows the parents back to a lineage trained
    from scratch, each contributing the epochs it trained before handing over. Lineages are unique across trials.
    """
    first: dict[str, dict] = {}  # lineage -> its first row (the row that names its values and parent)
    for rows in curves.values():
        for r in sorted(rows, key=lambda r: r.get("epoch", 0)):
            if r.get("lineage") is not None:
                first.setdefault(r["lineage"], r)
    own = [r for r in curves.get(trial_id, []) if r.get("lineage") in first]
    if not own:
        return []
    out, lineage, seen = [], own[-1]["lineage"], set()
    while lineage in first and lineage not in seen:
        seen.add(lineage)
        row = first[lineage]
        out.append((int(row.get("epoch", 1)), {k.removeprefix(HP): v for k, v in row.items() if k.startswith(HP)}))
        lineage = row.get("parent_lineage")
    return sorted(out, key=lambda x: x[0])


def schedules(df: pd.DataFrame, curves: dict[str, list[dict]], top: int = 5) -> list[str]:
    """A Markdown "Schedules" section (lines) for the ``top`` ranked trials of a PBT/PB2 experiment; [] when no
    result carries a mutated key. ``df``: the ranked summary (trial_id column); ``curves``: each trial's results."""
    if df.empty or not any(k.startswith(HP) for rows in curves.values() for r in rows for k in r):
        return []
    md = ["## Schedules", "", f"What the top {min(top, len(df))} trials ran: the mutated keys' values from the first "
          "epoch, and from each epoch where an exploit changed them (\"from X\": the trial went on from trial X's "
          "checkpoint of the epoch before, with X's values perturbed).", "", "| trial | from epoch | from | values |",
          "|---|---|---|---|"]
    for tid in df["trial_id"].head(top):
        for epoch, donor, values in schedule(curves.get(tid, [])):
            md.append(f"| {tid} | {epoch} | {donor or ''} | {', '.join(f'{k} {_value(v)}' for k, v in values.items())} |")
    return md + [""]
