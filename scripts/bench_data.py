#!/usr/bin/env python
"""Data throughput: files/s for ingesting N .spe files (default 10,000) and spectra/s for the simulator.

    python scripts/bench_data.py [--files 10000] [--workers 2]
"""
import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=10_000)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    from coremax.data.raw import read_folder
    from coremax.data.simulate import SCANNERS, file_name, plan_archive, simulate_core
    from coremax.data.spe import format_spe

    # Simulator: spectra of whole cores (truth, physics and Poisson counting, no file writing).
    plans = plan_archive(seed=0, cores=6)
    simulate_core(plans[0], 10.0)  # warm the cross-section cache
    t0 = time.perf_counter()
    n_sim = sum(len(simulate_core(p, 10.0)["truth"]) for p in plans)
    sim_rate = n_sim / (time.perf_counter() - t0)

    with tempfile.TemporaryDirectory() as tmp:
        counts = simulate_core(plans[0], 10.0)["spectra"][10.0]
        scanner = SCANNERS[0]
        per_core = 1000
        for i in range(args.files):
            core = f"BENCH-{i // per_core:02d}"
            folder = Path(tmp) / core / "Run 1 at  10kV"
            folder.mkdir(parents=True, exist_ok=True)
            meta = {"live_time_s": 10.0, "real_time_s": 10.8, "kv": 10.0, "current_ma": 1.0, "spec_rem": "bench"}
            name = file_name(core, 0, float(i % per_core), scanner, 10.0)
            (folder / name).write_bytes(format_spe(counts[i % len(counts)], meta).encode("latin-1"))
        t0 = time.perf_counter()
        meta, arr, skipped = read_folder(tmp, kv=10.0, workers=args.workers)
        read_rate = len(meta) / (time.perf_counter() - t0)
    assert arr.shape == (args.files, 2048) and not skipped
    print(f"ingest:    {args.files} .spe files with {args.workers} workers: {read_rate:,.0f} files/s")
    print(f"simulator: {n_sim} spectra of {len(plans)} cores: {sim_rate:,.0f} spectra/s")


if __name__ == "__main__":
    main()
