"""Rank the trials of one stored experiment: ``python tune_p7/summarize.py EXPERIMENT`` (path or URI).

Writes the experiment's summary again (summary.md, summary.html, summary.parquet, the plots: report/summary.py) into
its folder and prints the top rows of the ranked table.
"""
from __future__ import annotations

from tune_p7 import cli
from tune_p7.report.summary import summarize


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python tune_p7/summarize.py", description=__doc__.splitlines()[0])
    p.add_argument("experiment", help="experiment folder or URI (e.g. ray_results/smoke-20261124-101500)")
    a = p.parse_args(argv)
    print(summarize(a.experiment))
    return 0


if __name__ == "__main__":
    cli.run(main)
