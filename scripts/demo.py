#!/usr/bin/env python
"""The whole chain on the embedded synthetic data (what `make demo` runs):
synthetic scanner -> preprocess (labelled set + unlabelled pool) -> tiny MSM pretrain on the pool -> fine-tune
-> test -> MSM against the same network from scratch and the classical baselines at one small label budget.

Steps already done under the data root (a data set, a completed experiment) are reused, so the demo can be
re-run; pass --fresh-names to train new experiments beside the old ones.
"""
import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from coremax.cli import guard


DEMO_PRETRAIN_EPOCHS = 1  # the shipped CPU recipe pretrains for 10; the demo keeps within 10 minutes


def completed(data_root, name) -> bool:
    from coremax.experiment import Experiment
    from coremax.paths import experiment_dir

    return (experiment_dir(data_root, name) / "config.toml").is_file() and \
        Experiment.open(data_root, name).provenance().get("status") == "completed"


@guard
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default="data")
    p.add_argument("--fresh-names", action="store_true", help="suffix experiment names with the time")
    p.add_argument("--skip-study", action="store_true", help="stop after testing the fine-tuned model")
    args = p.parse_args(argv)
    root = Path(args.data_root)
    suffix = datetime.now(timezone.utc).strftime("-%Y%m%d-%H%M%S") if args.fresh_names else ""
    pre, ft, study = f"demo-pretrain{suffix}", f"demo-finetune{suffix}", f"demo-budget{suffix}"
    t0 = time.monotonic()

    from coremax import config as configlib
    from coremax.data.dataset import EMBEDDED, build_dataset
    from coremax.paths import dataset_dir
    from coremax.eval.run import evaluate_experiment
    from coremax.eval.study import STUDY_DEFAULTS, run_study, summarise
    from coremax.experiment import Experiment
    from coremax.stages import function_defaults, run_stage

    print("== 1/5 data: synthetic scanner -> data sets 'synthetic' (labelled) and 'synthetic-pool' (unlabelled)")
    for name in EMBEDDED:
        if (dataset_dir(root, name) / "info.toml").is_file():
            print(f"   reusing {root / 'datasets' / name}")
        else:
            print(f"   wrote {build_dataset(root, name, split=0.8)}")

    for step, name, conf, extra in (
        ("2/5 pretrain (the CPU recipe, shortened: MSM on the pool + the labelled train rows)", pre,
         "configs/cpu-pretrain.toml", ['experiment.stage="pretrain"', f"optim.epochs={DEMO_PRETRAIN_EPOCHS}"]),
        ("3/5 fine-tune (CaCO3, TOC; the CPU recipe, every labelled train row)", ft, "configs/cpu-finetune.toml",
         ['experiment.stage="finetune"', f'finetune.from="{pre}"']),
    ):
        print(f"== {step}: experiment {name!r}")
        if completed(root, name):
            print(f"   reusing {root / 'experiments' / name}")
            continue
        cfg = configlib.resolve(conf, extra + [f'experiment.name="{name}"'], function_defaults=function_defaults())
        print(f"   wrote {run_stage(cfg.to_dict(), root, command=sys.argv).path}")

    print(f"== 4/5 test {ft!r} on the held-out test cores")
    metrics = evaluate_experiment(root, ft)
    print(metrics[metrics["scope"] == "all"][["target", "n", "r2", "rmse", "mae", "bias", "coverage"]]
          .round(3).to_string(index=False))
    floor = Experiment.open(root, ft).read_result("test-floor")
    print("   the floor (true composition under each scan spot; no model can do better): " + ", ".join(
        f"{r.target} RMSE {r.rmse:.2f} (R^2 {r.r2:.3f})" for r in floor[floor["scope"] == "all"].itertuples()))
    print(f"   figures and pickles in {root / 'experiments' / ft / 'results'}")

    if not args.skip_study:
        print("== 5/5 MSM against the same network from scratch and the classical baselines, 50 labels, one seed")
        study_cfg = configlib.resolve("configs/label-budget-smoke.toml",
                                      [f'study.name="{study}"', f'study.pretrain="{pre}"'],
                                      default_file=STUDY_DEFAULTS)
        summary = run_study(root, study_cfg["study"], command=sys.argv)
        print(summarise(summary).round(3).to_string(index=False))
        print("   one seed and a shortened pretraining: the README's table (3 seeds, every budget) is the measure.")
        print(f"   table and figure in {root / 'experiments' / study / 'results'}")
    print(f"done in {time.monotonic() - t0:.0f} s; experiments under {root / 'experiments'}")


if __name__ == "__main__":
    main()
