"""Two label-budget studies of the same cores side by side (docs/results/label-budget-2kv.md): per protocol,
target, label count and method, the mean test RMSE over seeds of each study and the change from the first to the
second; then each study's standing tables (the best MSM-based against the best classical method).

    python docs/compare_studies.py budget-2kv-control budget-2kv        # after both studies ran
"""

from __future__ import annotations

import argparse

import pandas as pd

from coremax.experiment import Experiment
from coremax.study_tables import standing_table, summarise


def side_by_side(first: pd.DataFrame, second: pd.DataFrame, names: tuple[str, str]) -> str:
    """The markdown table of two studies' summaries (coremax.study_tables.summarise) on their shared rows."""
    keys = [k for k in ("protocol", "target", "k_per_core", "n_labels", "method") if k in first.columns]
    both = first.merge(second, on=keys, suffixes=("_a", "_b"))
    both = both[both["method"] != "floor"]
    lines = [f"| protocol | target | labels | method | {names[0]} | {names[1]} | change |", "|---|---|---|---|---|---|---|"]
    for r in both.sort_values(keys).itertuples():
        labels = f"{r.k_per_core} per test core" if getattr(r, "k_per_core", 0) else r.n_labels
        lines.append(f"| {r.protocol} | {r.target} | {labels} | {r.method} | {r.rmse_a:.2f} | {r.rmse_b:.2f} | "
                     f"{r.rmse_b - r.rmse_a:+.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("first")
    p.add_argument("second")
    p.add_argument("--data-root", default="data")
    a = p.parse_args(argv)
    raw = [Experiment.open(a.data_root, n).read_result("label-budget") for n in (a.first, a.second)]
    print(side_by_side(summarise(raw[0]), summarise(raw[1]), (a.first, a.second)))
    for name, table in zip((a.first, a.second), raw):
        for protocol in dict.fromkeys(table["protocol"]):
            print(f"\n{name}\n\n{standing_table(table, protocol)}")


if __name__ == "__main__":
    main()
