"""The whole chain on the embedded synthetic data, as `make demo` runs it (scripts/demo.py)."""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from coremax import config as configlib
from coremax.data.dataset import build_dataset
from coremax.eval.run import evaluate_experiment
from coremax.experiment import Experiment
from coremax.paths import dataset_dir
from coremax.stages import run_stage
from coremax.study import STUDY_DEFAULTS, pretrain_name, run_study
from coremax.study_tables import summarise

DEMO_DOC = """The whole chain on the embedded synthetic data (what `make demo` runs):
synthetic scanner -> preprocess (labelled set + unlabelled pool) -> tiny MSM pretrain on the pool -> fine-tune
-> test -> MSM against the same network from scratch and the classical baselines at one small label budget.

Steps already done under the data root (a data set, a completed experiment) are reused, so the demo can be
re-run; pass --fresh-names to train new experiments beside the old ones.
"""
DEMO_PRETRAIN_EPOCHS = 3  # the shipped CPU recipe pretrains for 20; 3 (about 50 s each in fp32 on 2 cores, the
# cosine schedule still run to the end: warm-up is at most a quarter of a run) keep the demo within 5 minutes


def run_demo(root: Path, fresh_names: bool = False, skip_study: bool = False) -> None:
    suffix = datetime.now(timezone.utc).strftime("-%Y%m%d-%H%M%S") if fresh_names else ""
    study_cfg = configlib.resolve("configs/label-budget-smoke.toml", [f'study.name="demo-budget{suffix}"',
                                  f'study.pretrain="demo-pretrain{suffix}"'], default_file=STUDY_DEFAULTS)["study"]
    # The demo's protocol (new-cores-spectra) pretrains on every spectrum, the test cores' too, never their labels.
    protocol = study_cfg["protocol"][0]
    pre, ft, study = pretrain_name(study_cfg, protocol), f"demo-finetune{suffix}", study_cfg["name"]
    t0 = time.monotonic()

    print("== 1/5 data: synthetic scanner -> data sets 'synthetic' (labelled) and 'synthetic-pool' (unlabelled)")
    for name in ("synthetic", "synthetic-pool"):  # the one-voltage benchmark and its pool
        if (dataset_dir(root, name) / "info.toml").is_file():
            print(f"   reusing {root / 'datasets' / name}")
        else:
            print(f"   wrote {build_dataset(root, name, split=0.8)}")

    for step, name, conf, extra in (
        ("2/5 pretrain (the CPU recipe, shortened: MSM on the pool, the labelled train rows and the test cores'"
         " spectra, never their labels)", pre, "configs/cpu-pretrain.toml",
         ['experiment.stage="pretrain"', f"optim.epochs={DEMO_PRETRAIN_EPOCHS}", "data.test_spectra=true"]),
        ("3/5 fine-tune (CaCO3, TOC; the CPU recipe's probe: a ridge head on the frozen encoder, seconds; every "
         "labelled train row)", ft, "configs/cpu-probe.toml",
         ['experiment.stage="finetune"', f'finetune.from="{pre}"']),
    ):
        print(f"== {step}: experiment {name!r}")
        if Experiment.state(root, name) == "completed":
            print(f"   reusing {root / 'experiments' / name}")
            continue
        cfg = configlib.resolve(conf, extra + [f'experiment.name="{name}"'])
        print(f"   wrote {run_stage(cfg.to_dict(), root, command=sys.argv).path}")

    print(f"== 4/5 test {ft!r} on the held-out test cores")
    metrics = evaluate_experiment(root, ft)
    print(metrics[metrics["scope"] == "all"][["target", "n", "r2", "rmse", "mae", "bias", "coverage"]]
          .round(3).to_string(index=False))
    floor = Experiment.open(root, ft).read_result("test-floor")
    print("   the floor (true composition under each scan spot; no model can do better): " + ", ".join(
        f"{r.target} RMSE {r.rmse:.2f} (R^2 {r.r2:.3f})" for r in floor[floor["scope"] == "all"].itertuples()))
    print(f"   figures and pickles in {root / 'experiments' / ft / 'results'}")

    if not skip_study:
        print(f"== 5/5 MSM against the same network from scratch and the classical baselines, 50 labels, one seed, "
              f"protocol {protocol}")
        summary = run_study(root, study_cfg)
        s = summarise(summary)
        table = s.pivot_table(index="method", columns="target", values=["rmse", "r2"])  # one row per method
        table.columns = [f"{target} {'RMSE' if what == 'rmse' else 'R2'}" for what, target in table.columns]
        print(table[sorted(table.columns)].round(3).to_string())
        print("   one seed and a shortened pretraining: the measure is docs/results/label-budget.md (3 seeds, every "
              "budget).")
        print(f"   table and figure in {root / 'experiments' / study / 'results'}")
    print(f"done in {time.monotonic() - t0:.0f} s; experiments under {root / 'experiments'}")


