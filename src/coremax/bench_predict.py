"""Prediction at archive scale (scripts/bench_predict.py): a small labelled archive trains a tiny MSM regressor
(one epoch from scratch: the cost of predicting does not depend on how well it was trained) and a PLS baseline;
an unlabelled archive of about N spectra is then predicted by each in a process of its own (scripts/predict.py,
so its peak RSS is predict's own). One line per model: spectra/s and peak RSS."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from coremax import config as configlib
from coremax.bench_data import SPECTRA_PER_CORE
from coremax.data.dataset import build_dataset
from coremax.data.simulate import simulate_archive
from coremax.stages import run_stage

# the child: predict.py's entry point, then its wall time and its own peak RSS (bench_data.peak_rss_mib).
_CHILD = """
import json, sys, time
from coremax.bench_data import peak_rss_mib
from coremax.cli import predict_main
t0 = time.perf_counter()
predict_main(sys.argv[1:] + ["--quiet"])
print(json.dumps({"seconds": time.perf_counter() - t0, "rss_mib": peak_rss_mib()}))
"""


def _train(root: Path) -> dict:
    """{model label: experiment name} trained on the small labelled archive under `root`."""
    build_dataset(root, "synthetic", workers=2)
    runs = {"msm tiny (fine-tuned regressor)": ("bench-msm", ['experiment.stage="finetune"', 'model.size="tiny"',
                                                             "optim.epochs=1", 'runtime.device="cpu"']),
            "pls baseline": ("bench-pls", ['experiment.stage="baseline"', 'baseline.method="pls"'])}
    for name, overrides in runs.values():
        run_stage(configlib.resolve(None, [*overrides, f'experiment.name="{name}"']).to_dict(), root)
    return {label: name for label, (name, _) in runs.items()}


def bench_predict(spectra: int, devices=("cpu",), show=print) -> list[dict]:
    """Predict an archive of about `spectra` spectra with each model on each device (the baseline, which runs on
    the CPU whatever the device, on the first only); one printed line per model and device."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        simulate_archive(root / "datasets" / "external" / "synthetic", seed=0, cores=6, spacing_mm=20.0, workers=2)
        experiments = _train(root)
        new = root / "new"
        cores = max(1, round(spectra / SPECTRA_PER_CORE))
        m = {**simulate_archive(new, seed=11, cores=cores, spacing_mm=10.0, workers=2, labelled=False),
             "cores": cores}
        for device, (label, name) in ((d, e) for i, d in enumerate(devices) for e in experiments.items()
                                      if i == 0 or e[1] != "bench-pls"):
            args = ["--data-root", str(root), "--experiment", name, "--raw", str(new / "raw"), "--out",
                    str(root / f"{name}-{device}.parquet"), "--device", device]
            res = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True)
            if res.returncode != 0:
                raise RuntimeError(f"predict failed: {(res.stderr.strip().splitlines() or ['?'])[-1]}")
            child = json.loads(res.stdout.strip().splitlines()[-1])
            row = {"model": label, "device": device, "spectra": m["spectra"], "cores": m["cores"],
                   "spectra_per_s": round(m["spectra"] / child["seconds"], 1),
                   "peak_rss_mib": round(child["rss_mib"], 1), "seconds": round(child["seconds"], 1)}
            show(" ".join(f"{k}={v!r}" if k == "model" else f"{k}={v}" for k, v in row.items()))
            out.append(row)
    return out
