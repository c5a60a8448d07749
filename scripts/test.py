#!/usr/bin/env python
"""Evaluate an experiment on its held-out test cores: python scripts/test.py --experiment exp1."""
import argparse

from coremax.cli import guard


@guard
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--experiment", required=True, help="experiment name under <data-root>/experiments/")
    p.add_argument("--data-root", default="data", help="folder holding datasets/ and experiments/ (default: data)")
    p.add_argument("--split", default="test", choices=("test", "val"), help="rows to evaluate (default: test)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--allow-changed-data", action="store_true",
                   help="evaluate although the data set's split changed since training (recorded in the results)")
    args = p.parse_args(argv)
    import pandas as pd

    from coremax.eval.run import evaluate_experiment
    from coremax.experiment import Experiment

    metrics = evaluate_experiment(args.data_root, args.experiment, args.split, args.device, args.allow_changed_data)
    with pd.option_context("display.width", 120, "display.max_columns", 20):
        print(metrics.round(4).to_string(index=False))
    exp = Experiment.open(args.data_root, args.experiment)
    if exp.has_result(f"{args.split}-floor"):
        floor = exp.read_result(f"{args.split}-floor")
        print("floor (the true composition under each scan spot against the lab values; no model can do better):")
        print(floor[floor["scope"] == "all"][["target", "n", "r2", "rmse"]].round(4).to_string(index=False))
    print(f"results written to {exp.results}")


if __name__ == "__main__":
    main()
