"""Label-budget study: for several label budgets and seeds, calibrate from a pretrain experiment (fine-tuned, or a
closed-form head on the frozen encoder), train the same network from scratch and fit the baselines, under one or
more protocols that say what of the test cores a run may read. Each protocol is one sweep (`study_sweep`): every
run is an ordinary experiment; the study adds the tables (label-budget.md, .csv, .png).

Protocols:
- `new-cores`: nothing of the test cores is read before the final evaluation.
- `new-cores-spectra`: unsupervised steps also read the test cores' spectra, never their labels (pretraining,
  `<pretrain>-spectra`; NMF and PLS's standardisation), as a researcher pretrains on every spectrum they have;
  its scratch runs are those of `new-cores` when the study has both (`lender`).
- `new-cores-labels`: as new-cores-spectra, plus k labelled rows of each test core (`study.test_labels`) join
  all the training labels; the test metrics and the floor are on that core's other rows. The k rows are random
  depths or chosen by sample suggestion (`study.suggest`, in the features of `study.suggest_from`, among each
  core's lab samples), the same rows for every method of a seed.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pandas as pd

from coremax import config as configlib
from coremax import suggest
from coremax.data.bulk import labelled_mask
from coremax.data.dataset import load_arrays, load_split
from coremax.engine.labels import labelled
from coremax.errors import UserError
from coremax.eval import figures
from coremax.stats.metrics import FLAG_SCOPES
from coremax.experiment import Experiment
from coremax.io import atomic_path
from coremax.study_methods import PROTOCOLS, SELECTIONS, baseline_methods, methods, neural_methods
from coremax.study_tables import markdown_table, standing_table
from coremax.sweep import SWEEP_DEFAULTS, run_sweep, runs, tested_metrics

STUDY_DEFAULTS = Path(configlib.__file__).with_name("label-budget.toml")


def selection_files(study: dict) -> dict[str, str]:
    """data.test_label_rows of each study.suggest method (relative to the data root; "" = random depths)."""
    unknown = [m for m in study["suggest"] if m not in SELECTIONS]
    if unknown or not study["suggest"]:
        raise UserError(f"study.suggest has {unknown or 'nothing'}; use a list of some of {list(SELECTIONS)}.")
    folder = f"experiments/{study['name']}-labels-suggest/results"
    return {m: "" if m == "random" else f"{folder}/selection-{m}.csv" for m in study["suggest"]}


def protocols(study: dict) -> list[str]:
    chosen = list(study["protocol"])
    unknown = [p for p in chosen if p not in PROTOCOLS]
    if unknown or not chosen:
        raise UserError(f"study.protocol has {unknown or chosen}; use a list of some of {list(PROTOCOLS)}.")
    return chosen


def lender(study: dict, protocol: str) -> str | None:
    """The protocol whose runs of the methods that start from no pretraining (scratch) this one reuses:
    new-cores-spectra's scratch runs would be new-cores's to the last setting (the test cores' spectra reach only
    the pretraining and the baselines), so with both protocols in the study they train once."""
    both = {"new-cores", "new-cores-spectra"} <= set(protocols(study))
    return "new-cores" if protocol == "new-cores-spectra" and both else None


def borrowed(study: dict, protocol: str) -> list[str]:
    """The methods of study.methods whose runs this protocol takes from its lender."""
    neural = neural_methods()
    return [m for m in study["methods"] if m in neural and not neural[m][1]] if lender(study, protocol) else []


def pretrain_name(study: dict, protocol: str) -> str:
    """The pretraining a protocol's MSM runs start from: study.pretrain, or `<it>-spectra` when the protocol lets
    pretraining read the test cores' spectra (shared by new-cores-spectra and new-cores-labels)."""
    return study["pretrain"] + ("-spectra" if PROTOCOLS[protocol][1] else "")


def study_sweep(study: dict, protocol: str = "new-cores") -> dict:
    """One protocol of the study as a sweep: one variant per method, a grid over data.max_labels (or, for
    new-cores-labels, over data.test_labels with every training label), the seeds, the protocol's pretraining
    as the sweep's parent, and test metrics of every run (reported; nothing is chosen on them)."""
    unknown = set(study["methods"]) - set(methods())
    if unknown:
        raise UserError(f"study.methods has {sorted(unknown)}; use some of {list(methods())}.")
    suffix, spectra, labels = PROTOCOLS[protocol]
    reads = {"data.test_spectra": True} if spectra else {}
    pretrain = pretrain_name(study, protocol)
    unknown = set(study["method_overrides"]) - set(study["methods"])
    if unknown or not all(isinstance(v, list) for v in study["method_overrides"].values()):
        raise UserError(f"study.method_overrides takes lists of overrides for methods of study.methods; it has "
                        f"{sorted(unknown) or 'a value that is not a list'}.")
    variants = {}
    for method in [m for m in study["methods"] if m not in borrowed(study, protocol)]:
        if method in neural_methods():
            mode, pretrained, extra = neural_methods()[method]
            # a pretrained run may read the test spectra its pretraining read (finetune.epo's setting means)
            variants[method] = {"config": study["finetune_config"], "overrides": {
                **configlib.parse_overrides(study["overrides"]), **(reads if pretrained else {}),
                "experiment.stage": "finetune", "finetune.from": pretrain if pretrained else "", "finetune.mode": mode,
                **extra}}
        else:
            variants[method] = {"overrides": {**configlib.parse_overrides(study["baseline_overrides"]), **reads,
                                              "experiment.stage": "baseline", **baseline_methods()[method]}}
        variants[method]["overrides"].update(configlib.parse_overrides(study["method_overrides"].get(method, [])))
    parent = {}
    if any(neural_methods().get(m, ("", False))[1] for m in study["methods"]) and study["pretrain_config"]:
        parent = {"name": pretrain, "config": study["pretrain_config"],
                  "overrides": {**configlib.parse_overrides(study["pretrain_overrides"]), **reads,
                                "experiment.stage": "pretrain"}}
    defaults = configlib.resolve(SWEEP_DEFAULTS, default_file=SWEEP_DEFAULTS)["sweep"]
    grid = {"data.test_labels": list(study["test_labels"]),
            "data.test_label_rows": list(selection_files(study).values())} if labels else \
        {"data.max_labels": list(study["budgets"])}
    return {**defaults, "name": study["name"] + suffix, "metrics": [f"val_rmse_{t}" for t in study["targets"]],
            "overrides": {"data.dataset": study["dataset"], "data.targets": list(study["targets"]),
                          **({"data.max_labels": 0} if labels else {})},
            "seeds": list(study["seeds"]), "grid": grid, "variants": variants, "parent": parent, "test": True}


def check_pretrain(data_root, study: dict, protocol: str) -> None:
    """Without study.pretrain_config the msm runs need a completed pretrain experiment: say so up front."""
    if not any(neural_methods().get(m, ("", False))[1] for m in study["methods"]) or study["pretrain_config"]:
        return
    name = pretrain_name(study, protocol)
    if Experiment.state(data_root, name or "-") != "completed":
        raise UserError(f"The {protocol} protocol needs {name!r}, a completed pretrain experiment under "
                        f"{Path(data_root) / 'experiments'}; train one first or set study.pretrain_config.")


def run_study(data_root, study: dict, jobs: int = 1, log=print) -> pd.DataFrame:
    """Run each protocol's sweep, then the tables: test RMSE/R^2 per protocol, method, label count and seed,
    overall and per test core, beside the floor on the same rows."""
    chosen = protocols(study)
    sweeps = {p: study_sweep(study, p) for p in chosen}
    for p in chosen:
        own_runs(sweeps[p])  # every run of every protocol is checked before anything trains
        check_pretrain(data_root, study, p)
    for p in chosen:
        if PROTOCOLS[p][2]:
            write_selections(data_root, study, p, log)
        if sweeps[p]["variants"]:  # none left when every method is borrowed
            run_sweep(data_root, sweeps[p], jobs, log)
    parts = []
    for p in chosen:  # after every sweep: a protocol may borrow the runs of one that trains after it
        source = lender(study, p)
        shared = [r for r in own_runs(sweeps[source]) if r["variant"] in borrowed(study, p)] if source else []
        parts.append(protocol_rows(data_root, study, p, sweeps[p], shared))
    summary = pd.concat(parts, ignore_index=True)
    # The new-cores sweep's folder is the study's; without that protocol the study makes its own.
    created = Experiment.state(data_root, study["name"]) == "absent"
    out = Experiment.create(data_root, study["name"], {"study": study}) if created else \
        Experiment.open(data_root, study["name"])
    with out.run() if created else contextlib.nullcontext():
        with atomic_path(out.results / "label-budget.md") as tmp:
            tmp.write_text("\n".join(markdown_table(summary[summary["protocol"] == p], p) + "\n" +
                                     standing_table(summary, p) for p in chosen))
        out.write_result("label-budget", summary)
        with atomic_path(out.results / "label-budget.csv") as tmp:
            summary.to_csv(tmp, index=False)
        for p in chosen:  # one figure per protocol, against its own label count
            part = summary[(summary["protocol"] == p) & (summary["scope"] == "all") & (summary["method"] != "floor")
                           & summary["selection"].isin(["", study["suggest"][0]])]
            figures.plot_label_budget(part, out.results / f"label-budget-{p}.png",
                                      "k_per_core" if PROTOCOLS[p][2] else "n_labels")
    return summary


def write_selections(data_root, study: dict, protocol: str, log=print) -> None:
    """The k lab samples of each test core per seed that each suggestion method of study.suggest picks, in the
    features of study.suggest_from (default: the protocol's pretraining; `uncertain` needs a fine-tuned or
    baseline experiment), among each core's labelled rows; written once into `<name>-labels-suggest`."""
    files = {m: f for m, f in selection_files(study).items() if f}
    if not files:
        return
    name = f"{study['name']}-labels-suggest"
    source = study["suggest_from"] or pretrain_name(study, protocol)
    exp = Experiment.open(data_root, name) if Experiment.state(data_root, name) != "absent" else \
        Experiment.create(data_root, name, {"study": study, "suggest_from": source})
    todo = {m: f for m, f in files.items() if not (Path(data_root) / f).is_file()}
    if not todo:
        return
    chooser = Experiment.open(data_root, source)
    features_of, pred = suggest.experiment_space(chooser)
    cfg = chooser.config()
    test = load_split(data_root, study["dataset"], "test")
    features = features_of(test)
    width = None if pred is None else suggest.interval_widths(chooser, pred, test)[2]
    candidates = labelled_mask(test, cfg["data"]["targets"])  # only depths with a lab sample
    with exp.run():
        for method, path in todo.items():
            parts = []
            for seed in study["seeds"]:
                for k in study["test_labels"]:
                    chosen = suggest.choose(test[["core", "depth_mm", "source_file"]], features, k, method, seed,
                                            width=width, candidates=candidates, per_core=True, strict=False)
                    parts.append(chosen.assign(seed=seed, k=k)[["seed", "k", "core", "depth_mm", "source_file",
                                                                 "rank", "reason"]])
            with atomic_path(Path(data_root) / path) as tmp:
                pd.concat(parts, ignore_index=True).to_csv(tmp, index=False)
            log(f"chose the lab samples of the test cores by {method} suggestion from {source}: {path}")


def own_runs(sweep: dict) -> list[dict]:
    """The runs of a protocol's sweep; none when all its methods are borrowed."""
    return runs(sweep) if sweep["variants"] else []


def protocol_rows(data_root, study: dict, protocol: str, sweep: dict, shared: list[dict]) -> pd.DataFrame:
    """One row per run (the sweep's, and the `shared` runs it borrows), metric scope (all, each test core) and
    target, plus the floor as a method "floor" on the very rows each run was scored on."""
    train_meta, _ = load_arrays(data_root, study["dataset"], "train")  # the table only: no counts are read
    rows, floors = [], set()
    selections = {f: m for m, f in selection_files(study).items()}
    for r in own_runs(sweep) + shared:
        exp = Experiment.open(data_root, r["name"])
        targets = exp.config()["data"]["targets"]
        n_all = len(labelled(train_meta, targets))
        budget = r["values"].get("data.max_labels", 0)
        k = r["values"].get("data.test_labels", 0)
        selection = selections.get(r["values"].get("data.test_label_rows", ""), "random") if k else ""
        common = {"protocol": protocol, "budget": budget, "seed": r["seed"], "k_per_core": k, "selection": selection,
                  "n_labels": min(budget, n_all) if budget else n_all}
        metrics = tested_metrics(data_root, r["name"])  # overall ("all") and per test core; the shift checks' apart
        for m in metrics[~metrics["scope"].isin(FLAG_SCOPES)].itertuples():
            rows.append({**common, "method": r["variant"], "scope": m.scope, "target": m.target, "n_test": m.n,
                         "r2": m.r2, "rmse": m.rmse, "mae": m.mae, "bias": m.bias, "experiment": r["name"]})
        key = (budget, k, selection, r["seed"] if k else 0)  # the scored rows differ only with data.test_labels
        if key not in floors and exp.has_result("test-floor"):  # written by the evaluation, on the rows it scored
            floors.add(key)
            for m in exp.read_result("test-floor").itertuples():
                rows.append({**common, "method": "floor", "scope": m.scope, "target": m.target, "n_test": m.n,
                             "r2": m.r2, "rmse": m.rmse, "mae": m.mae, "bias": m.bias, "experiment": ""})
    return pd.DataFrame(rows)
