#!/usr/bin/env python
"""Data throughput: files/s for ingesting N .spe files (default 10,000) and spectra/s for the simulator.

    python scripts/bench_data.py [--files 10000] [--workers 2]
"""
import argparse
import tempfile
import time
from pathlib import Path


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=10_000)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    from coremax.data.raw import read_folder
    from coremax.data.simulate import SCANNERS, file_name, plan_archive, simulate_archive, simulate_core
    from coremax.data.spe import format_spe

    # Simulator, one process: composition, physics and Poisson counting of whole cores (no file writing).
    plans = plan_archive(seed=0, cores=6)
    simulate_core(plans[0], 10.0)  # warm the cross-section cache
    t0 = time.perf_counter()
    n_sim = sum(len(simulate_core(p, 10.0)["truth"]) for p in plans)
    sim_rate = n_sim / (time.perf_counter() - t0)

    with tempfile.TemporaryDirectory() as tmp:
        # Simulator end to end: the default archive (12 cores) with .spe, bulk and truth files written.
        t0 = time.perf_counter()
        manifest = simulate_archive(Path(tmp) / "archive", workers=args.workers)
        archive_s = time.perf_counter() - t0

        # Ingest: copies of simulated spectra under 10 cores of 1,000 files each.
        counts = simulate_core(plans[0], 10.0)["spectra"][10.0]
        per_core = 1000
        for i in range(args.files):
            core = f"BENCH-{i // per_core:02d}"
            folder = Path(tmp) / "raw" / core / "Run 1 at  10kV"
            folder.mkdir(parents=True, exist_ok=True)
            meta = {"live_time_s": 10.0, "real_time_s": 10.8, "kv": 10.0, "current_ma": 1.0, "spec_rem": "bench",
                    "slit_dc_mm": 10.0, "slit_cc_mm": 12.0, "total_cps": 5000.0, "date": "2019-03-14T10:22:05"}
            name = file_name(core, "0000", float(i % per_core), SCANNERS[0], 10.0)
            (folder / name).write_bytes(format_spe(counts[i % len(counts)], meta).encode())
        t0 = time.perf_counter()
        meta, arr, skipped = read_folder(Path(tmp) / "raw", kv=10.0, workers=args.workers)
        read_rate = len(meta) / (time.perf_counter() - t0)
    assert arr.shape == (args.files, 2048) and not skipped
    print(f"ingest:    {args.files} .spe files with {args.workers} workers: {read_rate:,.0f} files/s")
    print(f"simulator: {n_sim} spectra of {len(plans)} cores in one process: {sim_rate:,.0f} spectra/s")
    print(f"simulator: default archive, {manifest['spectra']} spectra written as .spe with {args.workers} workers "
          f"in {archive_s:.1f} s: {manifest['spectra'] / archive_s:,.0f} spectra/s")


if __name__ == "__main__":
    main()
