"""The README's figure: a predicted down-core profile with its interval against the lab points of one test core.

    python docs/make_figure.py                                  # trains what it needs on the embedded data (minutes)
    python docs/make_figure.py --experiment demo-finetune       # after `make demo`: that experiment's test profile

Without --experiment it builds the embedded synthetic data set `synthetic` under --data-root when missing (not the
unlabelled pool), pretrains the CPU recipe (configs/cpu-pretrain.toml) shortened to --epochs on the labelled archive's
spectra, the test cores' spectra included, never their labels (protocol new-cores-spectra), calibrates it with
LP-FT (configs/cpu-lpft.toml), tests it on the held-out cores, and draws one test core with
coremax.eval.figures.plot_profiles into docs/img/profile.png. It prints the test metrics the figure belongs to.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from coremax import config as configlib
from coremax.data.dataset import build_dataset
from coremax.eval.figures import plot_profiles
from coremax.eval.run import evaluate_experiment
from coremax.experiment import Experiment
from coremax.paths import dataset_dir
from coremax.stages import run_stage

HERE = Path(__file__).resolve().parent
PRE, FT = "figure-pretrain", "figure-lpft"


def train(root: Path, name: str, config: str, extra: list[str]) -> None:
    if Experiment.state(root, name) == "completed":
        print(f"reusing {root / 'experiments' / name}")
        return
    cfg = configlib.resolve(config, extra + [f'experiment.name="{name}"'])
    run_stage(cfg.to_dict(), root, command=sys.argv)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default="data")
    p.add_argument("--experiment", help="a tested fine-tuned or baseline experiment to draw (default: train one)")
    p.add_argument("--epochs", type=int, default=6, help="pretraining epochs (the demo's 6; the recipe's 20)")
    p.add_argument("--core", help="test core to draw (default: the one with the most spectra)")
    p.add_argument("--out", default=str(HERE / "img" / "profile.png"))
    args = p.parse_args(argv)
    root = Path(args.data_root)
    name = args.experiment
    if name is None:
        if not (dataset_dir(root, "synthetic") / "info.toml").is_file():
            print(f"wrote {build_dataset(root, 'synthetic', split=0.8)}")
        train(root, PRE, "configs/cpu-pretrain.toml",
              ['experiment.stage="pretrain"', f"optim.epochs={args.epochs}", "data.pool=[]", "data.test_spectra=true"])
        train(root, FT, "configs/cpu-lpft.toml",
              ['experiment.stage="finetune"', f'finetune.from="{PRE}"', "data.pool=[]"])
        name = FT
    exp = Experiment.open(root, name)
    if not (exp.results / "test-predictions.pkl").is_file():
        evaluate_experiment(root, name)
    metrics = exp.read_result("test-metrics")
    frame = exp.read_result("test-predictions")
    core = args.core or frame["core"].value_counts().index[0]
    targets = [t for t in ("CaCO3", "TOC") if f"{t}_pred" in frame.columns]
    rows = frame[frame["core"] == core]
    print(metrics[metrics["scope"].isin(["all", core])].round(3).to_string(index=False))
    print(f"wrote {plot_profiles(rows, rows.dropna(subset=targets, how='all'), targets, args.out, core)}")


if __name__ == "__main__":
    main()
