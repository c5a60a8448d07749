"""The model card of a bundle (MODEL.md): what a shared calibration predicts, what it was calibrated on, how well
it did on its held-out test cores, and where it should not be trusted; written from the experiment's own
records so that the card cannot claim what the metrics table does not show."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _overall(table: pd.DataFrame | None, target: str) -> dict:
    """The `all` row of a metrics table for `target`, or {} where the table lacks it."""
    if table is None or "scope" not in table.columns:
        return {}
    rows = table[(table["target"] == target) & (table["scope"] == "all")]
    return rows.iloc[0].to_dict() if len(rows) else {}


def _num(v, fmt: str = ".3g") -> str:
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(float(v), fmt)


def model_card(name: str, cfg: dict, targets, dataset: dict, q, tables: dict) -> str:
    """Markdown of the experiment `name` (config `cfg`), its data set's record, half-widths `q` per target and
    its result tables by name (test-metrics, test-floor, ...)."""
    stage, data = cfg["experiment"]["stage"], cfg["data"]
    level = cfg["eval"]["interval"]
    size = f"model.size = {cfg.get('model', {}).get('size')}"
    model = f"classical baseline ({cfg.get('baseline', {}).get('method')})" if stage == "baseline" else \
        (f"fine-tuned MSM transformer ({size}, finetune.mode = {cfg.get('finetune', {}).get('mode')})")
    contents = set(dataset.get("contents", []))
    units = {t: "wt%, bounded to 0-100" if t in contents else "as measured" for t in targets}
    cores = dataset.get("cores", {})
    reads = (f"From raw XRF core-scanner spectra ({dataset['kv']:g} kV tube voltage, channels "
             f"{data['channels'][0]}-{data['channels'][1]} of {dataset['spectrum_length']}, transform "
             f"{data.get('transform')!r}), ")
    if stage == "pretrain":
        what = [reads + f"an MSM-pretrained transformer encoder ({size}, patch {cfg['model']['patch_size']}) "
                "gives features. It predicts nothing by itself: calibrate it on your lab samples with "
                "`finetune.from = \"<this file>\"` (scripts/train.py), or rank depths to sample with "
                "`scripts/suggest.py --model <this file> --method typical` (or diverse).", ""]
    else:
        what = [reads + f"a {model} predicts: " + ", ".join(f"**{t}** ({units[t]})" for t in targets) + ".",
                f"Each prediction comes with a {level:.0%} split-conformal interval (half-widths calibrated on "
                "the validation cores: " + ", ".join(f"{t} ±{_num(v)}" for t, v in zip(targets, q)) + ").", ""]
    lines = [f"# CoreMAX model {name}", "", "## What it predicts", "", *what,
             "## What it was calibrated on", "",
             f"Data set **{dataset['name']}**; scanners: {', '.join(map(str, dataset.get('scanners', []))) or 'n/a'}; "
             f"training cores: {', '.join(map(str, cores.get('train', []))) or 'n/a'}; validation cores: "
             f"{', '.join(map(str, cores.get('val', []))) or 'n/a'}; test cores: "
             f"{', '.join(map(str, cores.get('test', []))) or 'n/a'}. The sha256 of every data file is in "
             "dataset.json, the training's provenance in provenance.toml.", "",
             "## How well it did on the held-out test cores", ""]
    metrics, floor = tables.get("test-metrics"), tables.get("test-floor")
    if stage == "pretrain":
        lines += ["A pretraining is not tested against lab values: its skill is that of the calibrations made on "
                  "it (their bundles' cards).", ""]
    elif metrics is None:
        lines += ["Not tested: the experiment had no test results when it was bundled (run scripts/test.py on it "
                  "and bundle it again). Nothing below is a measured skill.", ""]
    else:
        lines += [f"| target | test spectra | RMSE | R² | bias | {level:.0%} interval coverage | mean interval width "
                  "| floor RMSE |", "|---|---|---|---|---|---|---|---|"]
        for t in targets:
            m, f = _overall(metrics, t), _overall(floor, t)
            lines.append(f"| {t} | {int(m.get('n', 0))} | {_num(m.get('rmse'))} | {_num(m.get('r2'))} | "
                         f"{_num(m.get('bias'))} | {_num(m.get('coverage'), '.1%')} | "
                         f"{_num(m.get('interval_width'))} | {_num(f.get('rmse')) if f else 'n/a'} |")
        lines += ["", "The floor is the RMSE of the true composition under each scan spot against its bulk sample: "
                  "no calibration can do better (known for synthetic archives only; n/a elsewhere). The full "
                  "table is test-metrics.csv.", ""]
    lines += ["## Intended use and limits", "",
              "Intended for down-core profiles of cores scanned like the calibration cores: the same scanner and "
              "tube voltage, similar sediments. Predictions of another scanner, voltage or sediment type are "
              "extrapolations and their intervals are not calibrated for them; predict.py flags another tube "
              "voltage, and the scanner, distance and core-shift checks need the training data set (a bundle "
              "alone skips them and says so). A few lab samples of a new core (predict.py --bulk) recalibrate "
              "it. The model measures neither ages nor porosity, and one spectrum's prediction is noisier than "
              "a profile's trend.", "",
              "Use: " + ("" if stage == "pretrain" else
                         "`python scripts/predict.py --model <this file> --raw <folder> --out profiles.csv`; ")
              + "`python scripts/suggest.py --model <this file> --raw <folder> --out next.csv` (depths to sample)"
              + ("" if stage == "baseline" else "; `finetune.from = \"<this file>\"` (continue training from it)")
              + ".", ""]
    return "\n".join(lines)
