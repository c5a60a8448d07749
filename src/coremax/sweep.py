"""Sweeps: a base experiment TOML, a grid and/or random samples over any config keys, and seeds.

Every point is an ordinary experiment named `<sweep>-p<NN>-s<seed>` (`<sweep>-<variant>-p<NN>-s<seed>` when the
sweep has variants: named bundles of a base TOML and overrides, e.g. fine-tuned vs from scratch vs a baseline),
trained by `scripts/train.py` in its own process; a `parent` experiment (a pretraining the variants fine-tune
from) is trained first when it is not complete. A re-run skips completed points and resumes interrupted ones from `last.pth`; `--jobs N` runs N points
side by side. The summary (`experiments/<sweep>/results/sweep.{pkl,csv,png}`) aggregates the chosen validation
metrics at each run's best epoch over seeds (mean, sd, n); with `sweep.test` the test metrics stand beside them,
reported and never used to choose. `sweep.sampler = "optuna"` lets an Optuna TPE sampler propose the points
instead, one after another from the validation results of the ones before (see `optuna_runs`).
"""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from coremax import config as configlib
from coremax.errors import UserError
from coremax.eval import figures
from coremax.stages import function_defaults, history_metrics
from coremax.eval.run import evaluate_experiment
from coremax.experiment import Experiment, try_lock
from coremax.io import atomic_path
from coremax.paths import check_name, experiment_dir

SWEEP_DEFAULTS = Path(configlib.__file__).with_name("sweep.toml")
TRAIN = Path(__file__).resolve().parents[2] / "scripts" / "train.py"


def _toml(value) -> str:
    return configlib._toml_value(value)


def _bounds(key: str, bounds) -> tuple[float, float, bool, bool]:
    """(low, high, log scale, integer) of a sweep.random range."""
    if not (isinstance(bounds, list) and len(bounds) == 2 and bounds[0] < bounds[1]):
        raise UserError(f"sweep.random.{key} must be [low, high] with low < high, e.g. [1e-5, 1e-3].")
    lo, hi = (float(b) for b in bounds)
    return lo, hi, lo > 0 and hi >= 10 * lo, all(isinstance(b, int) for b in bounds)


def _grid(sweep: dict) -> dict:
    for key, values in sweep["grid"].items():
        if not isinstance(values, list) or not values:
            raise UserError(f"sweep.grid.{key} must be a non-empty list of values, e.g. [0.3, 0.5].")
    return sweep["grid"]


def points(sweep: dict) -> list[dict]:
    """Every point: its index, variant ("" without variants) and the values of the swept keys (grid x random)."""
    grid = _grid(sweep)
    combos = [dict(zip(grid, c)) for c in itertools.product(*grid.values())] or [{}]
    draws = [{}]
    if sweep["samples"]:
        rng = np.random.default_rng(sweep["sample_seed"])
        draws = []
        for _ in range(sweep["samples"]):
            draw = {}
            for key, bounds in sweep["random"].items():
                lo, hi, log, integer = _bounds(key, bounds)
                v = math.exp(rng.uniform(math.log(lo), math.log(hi))) if log else rng.uniform(lo, hi)
                draw[key] = int(round(v)) if integer else float(f"{v:.4g}")
            draws.append(draw)
    values = [{**c, **d} for c, d in itertools.product(combos, draws)]
    return [{"point": i, "variant": variant, "values": v} for variant in (list(sweep["variants"]) or [""])
            for i, v in enumerate(values)]


def _variant(sweep: dict, name: str) -> tuple[str, list]:
    """(base TOML, overrides) of a variant; "" is the sweep's own base."""
    if not name:
        return sweep["base_config"], []
    v = sweep["variants"][name]
    unknown = set(v) - {"config", "overrides"}
    if unknown or not isinstance(v.get("overrides", []), list):
        raise UserError(f"sweep.variants.{name} takes config (a TOML path) and overrides (a list); it has "
                        f"{sorted(v)}.")
    return v.get("config", "") or sweep["base_config"], list(v.get("overrides", []))


def point_runs(sweep: dict, point: dict) -> list[dict]:
    """The runs of one point (one per seed) with their names and command-line overrides; the config is checked
    here, before any experiment exists, so a typo in a swept key leaves nothing behind."""
    config_file, variant_overrides = _variant(sweep, point["variant"])
    out = []
    for seed in sweep["seeds"]:
        name = f"{sweep['name']}-{point['variant'].replace('_', '') + '-' if point['variant'] else ''}" \
               f"p{point['point']:02d}-s{seed}"
        overrides = list(sweep["overrides"]) + variant_overrides + \
            [f"{k}={_toml(v)}" for k, v in point["values"].items()] + [f"experiment.seed={seed}"]
        cfg = configlib.resolve(config_file or None, overrides + [f'experiment.name="{name}"'],
                                function_defaults=function_defaults())
        known = history_metrics(cfg["experiment"]["stage"], cfg["data"]["targets"])
        unknown = [m for m in sweep["metrics"] if m not in known]
        if unknown:  # every run would score NaN, and an Optuna search would turn into a random one
            raise UserError(f"sweep.metrics names {unknown[0]!r}, which a {cfg['experiment']['stage']} run "
                            f"({name}) does not record; choose from {sorted(known)}.")
        out.append({**point, "seed": seed, "name": name, "config_file": config_file, "overrides": overrides})
    return out


def runs(sweep: dict) -> list[dict]:
    """Every run (point x seed) of a grid/random sweep."""
    return [r for p in points(sweep) for r in point_runs(sweep, p)]


def parent_run(sweep: dict) -> dict | None:
    """The experiment trained before the points (sweep.parent: name, config, overrides), checked like a point."""
    parent = sweep["parent"]
    if not parent:
        return None
    unknown = set(parent) - {"name", "config", "overrides"}
    if unknown or not parent.get("name"):
        raise UserError(f"sweep.parent needs a name (and may have config and overrides); it has {sorted(parent)}.")
    check_name(parent["name"], "sweep.parent.name")
    overrides = list(sweep["overrides"]) + list(parent.get("overrides", []))
    configlib.resolve(parent.get("config") or None, overrides + [f'experiment.name="{parent["name"]}"'],
                      function_defaults=function_defaults())
    return {"name": parent["name"], "config_file": parent.get("config", ""), "overrides": overrides}


def _state(data_root, name: str) -> str:
    folder = experiment_dir(data_root, name)
    if not (folder / "config.toml").is_file():
        return "new"
    status = Experiment.open(data_root, name).provenance().get("status", "")
    if status == "completed":
        return "done"
    # Interrupted, failed or killed (a SIGKILL leaves "running"): continue from last.pth when there is one.
    return "resume" if (folder / "checkpoints" / "last.pth").is_file() else "restart"


def _train(data_root, run: dict, threads: int) -> str:
    state = _state(data_root, run["name"])
    if state == "done":
        return "skipped"
    if state == "restart":
        raise UserError(f"The sweep run {run['name']!r} exists without a checkpoint to resume; delete "
                        f"{experiment_dir(data_root, run['name'])} and run the sweep again.")
    cmd = [sys.executable, str(TRAIN), "--data-root", str(data_root), "--name", run["name"]]
    cmd += ["--resume"] if state == "resume" else (["--config", run["config_file"]] if run["config_file"] else [])
    cmd += [] if state == "resume" else run["overrides"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise UserError(f"The sweep run {run['name']!r} failed: {last}")
    return "resumed" if state == "resume" else "trained"


def best_row(data_root, name: str) -> dict:
    """The history row of the epoch that best-model.pth holds (the lowest selection score)."""
    history = Experiment.open(data_root, name).read_result("history")
    score = next((c for c in ("val_nrmse", "val_loss") if c in history.columns), None)
    if score and history[score].isna().all():
        raise UserError(f"The run {name!r} has no finite validation score in its history; delete its folder and "
                        "run the sweep again.")
    # A baseline is fitted once: its one row holds the validation metrics of the hyperparameters it chose.
    return (history.loc[history[score].idxmin()] if score else history.iloc[-1]).to_dict()


def _train_all(data_root, some: list[dict], jobs: int, log) -> None:
    threads = max(1, (os.cpu_count() or 1) // max(jobs, 1))
    with ThreadPoolExecutor(max(jobs, 1)) as pool:  # each thread waits on one training process
        for run, what in zip(some, pool.map(lambda r: _train(data_root, r, threads), some)):
            log(f"{run['name']}: {what}")


def _space(sweep: dict) -> dict:
    """Optuna's search space: each sweep.random range (log-scaled as for random draws), each grid key's values
    as choices. Every corner is checked against the config before anything runs."""
    import optuna  # deferred: only Optuna sweeps need it

    if sweep["variants"]:
        raise UserError("sweep.variants cannot be combined with sweep.sampler = \"optuna\"; run one Optuna sweep "
                        "per variant (its base_config and overrides).")
    if sweep["samples"] < 1:
        raise UserError("sweep.samples must be at least 1 with sweep.sampler = \"optuna\": it is the number of "
                        "points (trials) the search runs.")
    space = {}
    for key, bounds in sweep["random"].items():
        lo, hi, log, integer = _bounds(key, bounds)
        space[key] = optuna.distributions.IntDistribution(int(lo), int(hi), log=log) if integer \
            else optuna.distributions.FloatDistribution(lo, hi, log=log)
    for key, values in _grid(sweep).items():
        if any(isinstance(v, (list, dict)) for v in values):
            raise UserError(f"sweep.grid.{key}: an Optuna search takes numbers, strings or booleans as choices, "
                            f"not lists; use sampler = \"grid\" for it.")
        space[key] = optuna.distributions.CategoricalDistribution(values)
    if not space:
        raise UserError("An Optuna sweep needs sweep.random ranges or sweep.grid choices to search over.")
    for corner in (0, -1):
        values = {k: (d.choices[corner] if hasattr(d, "choices") else (d.low, d.high)[corner])
                  for k, d in space.items()}
        point_runs(sweep, {"point": 0, "variant": "", "values": values})
    return space


def _check_values(data_root, run: dict) -> None:
    """An existing run of an Optuna point must hold the values proposed now (same sweep, same history)."""
    if not (experiment_dir(data_root, run["name"]) / "config.toml").is_file():
        return
    config = Experiment.open(data_root, run["name"]).config()
    for key, value in run["values"].items():
        held = config
        for part in key.split("."):
            held = held.get(part, {}) if isinstance(held, dict) else None
        if held != value:
            raise UserError(f"The sweep run {run['name']!r} holds {key} = {held!r} but the Optuna search now "
                            f"proposes {value!r}: the sweep's settings changed since it ran; give it a new "
                            f"sweep.name or delete its runs.")


def optuna_runs(data_root, sweep: dict, space: dict, jobs: int, log) -> list[dict]:
    """Points proposed one after another by a seeded TPE sampler, each from the validation results of the ones
    before (mean over seeds of the first of sweep.metrics, lower is better); the seeds of a point train side by
    side (--jobs). No Optuna storage is kept: a re-run asks the same seeded sampler again and tells it the
    results read back from the finished experiments, so it proposes the same points, skips the finished ones
    and goes on where the last run stopped."""
    import optuna  # deferred: only Optuna sweeps need it

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    objective = sweep["metrics"][0]
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=sweep["sample_seed"]))
    out = []
    for i in range(sweep["samples"]):
        trial = study.ask(space)
        some = point_runs(sweep, {"point": i, "variant": "", "values": dict(trial.params)})
        for run in some:
            _check_values(data_root, run)
        _train_all(data_root, some, jobs, log)
        value = float(np.nanmean([best_row(data_root, r["name"]).get(objective, np.nan) for r in some]))
        if math.isfinite(value):
            study.tell(trial, value)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        out += some
    if any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        best = study.best_trial
        log(f"best point (validation): p{best.number:02d} {best.params}, {objective} {best.value:.4g}")
    return out


def run_sweep(data_root, sweep: dict, jobs: int = 1, log=print) -> pd.DataFrame:
    if sweep["sampler"] not in ("grid", "optuna"):
        raise UserError(f"sweep.sampler must be \"grid\" or \"optuna\", not {sweep['sampler']!r}.")
    optuna_sweep = sweep["sampler"] == "optuna"
    check_name(sweep["name"], "sweep")
    # Everything is checked before the parent trains: every run of a grid, the corners of an Optuna space.
    space = _space(sweep) if optuna_sweep else None
    all_runs = [] if optuna_sweep else runs(sweep)
    experiments = experiment_dir(data_root, sweep["name"]).parent
    experiments.mkdir(parents=True, exist_ok=True)
    lock = try_lock(experiments / f".{sweep['name']}.sweep-lock")  # one live runner per sweep
    if lock is None:
        raise UserError(f"The sweep {sweep['name']!r} is being run by another process; wait for it to end (a re-run "
                        "afterwards trains only what is missing).")
    try:
        return _run_locked(data_root, sweep, jobs, log, space, all_runs)
    finally:
        os.close(lock)


def _run_locked(data_root, sweep: dict, jobs: int, log, space, all_runs: list) -> pd.DataFrame:
    optuna_sweep = space is not None
    parent = parent_run(sweep)
    if parent is not None:
        log(f"{parent['name']}: {_train(data_root, parent, os.cpu_count() or 1)} (parent)")
    if optuna_sweep:
        all_runs = optuna_runs(data_root, sweep, space, jobs, log)
    else:
        _train_all(data_root, all_runs, jobs, log)
    rows = []
    for run in all_runs:
        best = best_row(data_root, run["name"])
        row = {"point": run["point"], "variant": run["variant"], "seed": run["seed"], "experiment": run["name"],
               **run["values"], "best_epoch": best["epoch"], **{m: best.get(m, np.nan) for m in sweep["metrics"]}}
        if sweep["test"]:
            metrics = test_metrics(data_root, run["name"])
            for r in metrics[metrics["scope"] == "all"].itertuples():
                row[f"test_rmse_{r.target}"] = r.rmse
                row[f"test_r2_{r.target}"] = r.r2
        rows.append(row)
    table = pd.DataFrame(rows)
    summary = summarise(table, ["variant", *sweep["grid"], *sweep["random"]], sweep["metrics"][0])
    exp = Experiment.create(data_root, sweep["name"], {"sweep": sweep},
                            resume=(experiment_dir(data_root, sweep["name"]) / "config.toml").is_file())
    with exp.run():
        exp.write_result("sweep-runs", table)
        exp.write_result("sweep", summary)
        with atomic_path(exp.results / "sweep.csv") as tmp:
            summary.to_csv(tmp, index=False)
        figures.plot_sweep(summary, sweep["metrics"], exp.results / "sweep.png")
    return summary


def test_metrics(data_root, name: str) -> pd.DataFrame:
    """The run's test metrics (overall and per test core): evaluated once, then read from its results."""
    exp = Experiment.open(data_root, name)
    if (exp.results / "test-metrics.pkl").is_file():
        return exp.read_result("test-metrics")
    return evaluate_experiment(data_root, name)


def summarise(table: pd.DataFrame, keys: list[str], counted: str = "") -> pd.DataFrame:
    """Mean, sd and n over seeds of every metric column, one row per point; n counts the runs that gave the
    metric `counted` (a NaN adds nothing to the mean, so it must not count either)."""
    metrics = [c for c in table.columns if c not in {"point", "seed", "experiment", *keys}]
    g = table.groupby(["variant", "point"], sort=False)
    out = g[[k for k in keys if k != "variant"]].first()
    for m in metrics:
        out[m] = g[m].mean()
        out[f"{m}_sd"] = g[m].std()
    out["n"] = g[counted].count() if counted in table.columns else g.size()
    return out.reset_index()[["variant", "point", *out.columns]]
