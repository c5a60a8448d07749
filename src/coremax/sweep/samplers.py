"""Which points a sweep runs: every run is named and its config checked here, before anything trains.

A sampler registers in SAMPLERS (`sweep.sampler`): `check(sweep)` before the parent trains, then
`run(data_root, sweep, jobs, log)` trains its points (runner.train_all) and returns their runs.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from coremax import config as configlib
from coremax.errors import UserError
from coremax.paths import check_name
from coremax.stages import history_metrics
from coremax.sweep.runner import best_row, train_all


def values(overrides) -> dict:
    """A sweep's, variant's or parent's overrides as {"section.key": value}: user TOML writes a list of
    `section.key=value` texts, a study builds the dictionary itself."""
    if isinstance(overrides, dict):
        return dict(overrides)
    if not isinstance(overrides, list):
        raise UserError(f"Overrides must be a list of section.key=value texts; got {overrides!r}.")
    return configlib.parse_overrides(overrides)


def _bounds(key: str, bounds) -> tuple[float, float, bool, bool]:
    """(low, high, log scale, integer) of a sweep.random range."""
    if not (isinstance(bounds, list) and len(bounds) == 2 and bounds[0] < bounds[1]):
        raise UserError(f"sweep.random.{key} must be [low, high] with low < high, e.g. [1e-5, 1e-3].")
    lo, hi = (float(b) for b in bounds)
    return lo, hi, lo > 0 and hi >= 10 * lo, all(isinstance(b, int) for b in bounds)


def _grid(sweep: dict) -> dict:
    for key, choices in sweep["grid"].items():
        if not isinstance(choices, list) or not choices:
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
    combined = [{**c, **d} for c, d in itertools.product(combos, draws)]
    return [{"point": i, "variant": variant, "values": v} for variant in (list(sweep["variants"]) or [""])
            for i, v in enumerate(combined)]


def _variant(sweep: dict, name: str) -> tuple[str, dict]:
    """(base TOML, overrides) of a variant; "" is the sweep's own base."""
    if not name:
        return sweep["base_config"], {}
    v = sweep["variants"][name]
    unknown = set(v) - {"config", "overrides"}
    if unknown or not isinstance(v.get("overrides", []), (list, dict)):
        raise UserError(f"sweep.variants.{name} takes config (a TOML path) and overrides (a list); it has "
                        f"{sorted(v)}.")
    return v.get("config", "") or sweep["base_config"], values(v.get("overrides", []))


def point_runs(sweep: dict, point: dict) -> list[dict]:
    """The runs of one point (one per seed): name, the point's swept `values`, and `overrides`, every value the
    run sets ({"section.key": value}). The config is checked here, before any experiment exists, so a typo in a
    swept key leaves nothing behind."""
    config_file, variant_values = _variant(sweep, point["variant"])
    out, shared = [], {**values(sweep["overrides"]), **variant_values, **point["values"]}
    for seed in sweep["seeds"]:
        name = f"{sweep['name']}-{point['variant'].replace('_', '') + '-' if point['variant'] else ''}" \
               f"p{point['point']:02d}-s{seed}"
        run_values = {**shared, "experiment.seed": seed}
        cfg = configlib.resolve(config_file or None, values={**run_values, "experiment.name": name})
        known = history_metrics(cfg["experiment"]["stage"], cfg["data"]["targets"])
        unknown = [m for m in sweep["metrics"] if m not in known]
        if unknown:  # every run would score NaN, and an Optuna search would turn into a random one
            raise UserError(f"sweep.metrics names {unknown[0]!r}, which a {cfg['experiment']['stage']} run "
                            f"({name}) does not record; choose from {sorted(known)}.")
        out.append({**point, "seed": seed, "name": name, "config_file": config_file, "overrides": run_values,
                    "config": cfg.to_dict()})
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
    run_values = {**values(sweep["overrides"]), **values(parent.get("overrides", []))}
    cfg = configlib.resolve(parent.get("config") or None, values={**run_values, "experiment.name": parent["name"]})
    return {"name": parent["name"], "config_file": parent.get("config", ""), "overrides": run_values,
            "config": cfg.to_dict()}


class Grid:
    """Every grid point x the random draws, all known (and checked) before any run."""

    def check(self, sweep: dict):
        return runs(sweep)

    def run(self, data_root, sweep: dict, jobs: int, log, checked) -> list[dict]:
        train_all(data_root, checked, jobs, log)
        return checked


class Optuna:
    """Points proposed one after another by a seeded TPE sampler, each from the validation results of the ones
    before (mean over seeds of the first of sweep.metrics, lower is better); the seeds of a point train side by
    side (--jobs). No Optuna storage is kept: a re-run asks the same seeded sampler again and tells it the
    results read back from the finished experiments, so it proposes the same points, skips the finished ones
    and goes on where the last run stopped."""

    def check(self, sweep: dict) -> dict:
        """Optuna's search space: each sweep.random range (log-scaled as for random draws), each grid key's
        values as choices. Every corner is checked against the config before anything runs."""
        import optuna  # deferred: only Optuna sweeps need it

        if sweep["variants"]:
            raise UserError("sweep.variants cannot be combined with sweep.sampler = \"optuna\"; run one Optuna "
                            "sweep per variant (its base_config and overrides).")
        if sweep["samples"] < 1:
            raise UserError("sweep.samples must be at least 1 with sweep.sampler = \"optuna\": it is the number "
                            "of points (trials) the search runs.")
        space = {}
        for key, bounds in sweep["random"].items():
            lo, hi, log, integer = _bounds(key, bounds)
            space[key] = optuna.distributions.IntDistribution(int(lo), int(hi), log=log) if integer \
                else optuna.distributions.FloatDistribution(lo, hi, log=log)
        for key, choices in _grid(sweep).items():
            if any(isinstance(v, (list, dict)) for v in choices):
                raise UserError(f"sweep.grid.{key}: an Optuna search takes numbers, strings or booleans as "
                                f"choices, not lists; use sampler = \"grid\" for it.")
            space[key] = optuna.distributions.CategoricalDistribution(choices)
        if not space:
            raise UserError("An Optuna sweep needs sweep.random ranges or sweep.grid choices to search over.")
        for corner in (0, -1):
            corner_values = {k: (d.choices[corner] if hasattr(d, "choices") else (d.low, d.high)[corner])
                             for k, d in space.items()}
            point_runs(sweep, {"point": 0, "variant": "", "values": corner_values})
        return space

    def run(self, data_root, sweep: dict, jobs: int, log, space) -> list[dict]:
        import optuna  # deferred: only Optuna sweeps need it

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        objective = sweep["metrics"][0]
        study = optuna.create_study(direction="minimize",
                                    sampler=optuna.samplers.TPESampler(seed=sweep["sample_seed"]))
        out = []
        for i in range(sweep["samples"]):
            trial = study.ask(space)
            some = point_runs(sweep, {"point": i, "variant": "", "values": dict(trial.params)})
            train_all(data_root, some, jobs, log)
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


SAMPLERS = {"grid": Grid(), "optuna": Optuna()}  # sweep.sampler -> sampler; a new one is one entry here
