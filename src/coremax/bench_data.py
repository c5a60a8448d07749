"""The data path at scale (scripts/bench_data.py): per pool size, simulate an unlabelled pool of .spe files,
preprocess it in a process of its own (so that its peak RSS is preprocessing's own, not the simulator's or this
process's), then load the data set's energy window. One line per size: spectra/s and peak RSS first."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from coremax.bench_elements import element_fit_seconds
from coremax.data.dataset import load_arrays
from coremax.data.raw import read_folder
from coremax.data.simulate import simulate_archive

SPECTRA_PER_CORE = 300  # a simulated core scanned at 1 cm holds ~300 spectra on average (39,623 in 133 cores)
FIT_SAMPLE_CORES = 10   # the element fit's own speed is timed on this many cores' spectra (they fit in memory)

# Run in the child: build_dataset, then its wall time, its own peak RSS and the largest reading worker's
# (RUSAGE_CHILDREN: the pool's processes, each its own memory).
_CHILD = """
import json, resource, sys, time
from coremax.bench_data import peak_rss_mib
from coremax.data.dataset import build_dataset
root, workers = sys.argv[1], int(sys.argv[2])
t0 = time.perf_counter()
build_dataset(root, "pool", raw=root + "/datasets/external/pool/raw", workers=workers)
print(json.dumps({"seconds": time.perf_counter() - t0, "rss_mib": peak_rss_mib(),
                  "workers_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB: VmHWM, which exec starts afresh. Not ru_maxrss where VmHWM can
    be read: Linux carries ru_maxrss over fork and exec, so a child would report its parent's (larger) resident
    memory at the fork, here the simulator's."""
    try:
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):  # not Linux: ru_maxrss (KiB on Linux, bytes on macOS)
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def preprocess_in_child(root: Path, workers: int) -> dict:
    """build_dataset of the pool under `root` in a fresh interpreter: {seconds, rss_mib, workers_rss_mib}."""
    out = subprocess.run([sys.executable, "-c", _CHILD, str(root), str(workers)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"preprocessing failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def fit_speed(raw: Path, workers: int) -> float:
    """Spectra/s of the element fit alone, on the first FIT_SAMPLE_CORES cores (read whole: a sample)."""
    cores = sorted(p for p in raw.iterdir() if p.is_dir())[:FIT_SAMPLE_CORES]
    with tempfile.TemporaryDirectory() as tmp:
        for core in cores:
            (Path(tmp) / core.name).symlink_to(core, target_is_directory=True)
        meta, counts, _ = read_folder(tmp, 10.0, 2048, "fail", workers)
    seconds, _ = element_fit_seconds(meta, counts)
    return len(meta) / seconds


def bench_size(spectra: int, workers: int) -> dict:
    """One pool of about `spectra` spectra: simulated, preprocessed (in a child), loaded."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pool = root / "datasets" / "external" / "pool"
        cores = max(1, round(spectra / SPECTRA_PER_CORE))
        t0 = time.perf_counter()
        m = simulate_archive(pool, seed=3, cores=cores, spacing_mm=10.0, workers=workers, labelled=False)
        simulate_s = time.perf_counter() - t0
        child = preprocess_in_child(root, workers)
        size = sum(f.stat().st_size for f in (root / "datasets" / "pool").iterdir())
        t0 = time.perf_counter()
        _, x = load_arrays(root, "pool", "train")
        total = float(np.asarray(x[:, :512], dtype=np.float32).sum())  # touch the energy window of every row
        load_s = time.perf_counter() - t0
        fit = fit_speed(pool / "raw", workers)
    return {"spectra": m["spectra"], "spectra_per_s": round(m["spectra"] / child["seconds"], 1),
            "peak_rss_mib": round(child["rss_mib"], 1), "workers_peak_rss_mib": round(child["workers_rss_mib"], 1),
            "preprocess_s": round(child["seconds"], 1), "cores": cores, "simulate_s": round(simulate_s, 1),
            "element_fit_spectra_per_s": round(fit), "dataset_mib": round(size / 2**20, 1),
            "load_window_s": round(load_s, 2), "checksum": total > 0}


def bench_data(sizes, workers: int, show=print) -> list[dict]:
    """bench_size for each pool size, a line each as it finishes."""
    rows = []
    for spectra in sizes:
        rows.append(bench_size(spectra, workers))
        show(" ".join(f"{k}={v}" for k, v in rows[-1].items()))
    return rows
