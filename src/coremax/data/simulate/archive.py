"""Writing an archive: `<out>/raw/<core>/Run <i> at  <kV>kV/*.spe` (genuine Avaatech files and names),
`<out>/bulk.csv` beside raw/, `<out>/truth.csv` (never read by training) and `<out>/manifest.toml` (settings and
the default held-out `test_cores`); and the named benchmarks (BENCHMARKS) besides the default archive.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd

from coremax.data.simulate import bromine
from coremax.data.simulate.core import default_test_cores, plan_archive, simulate_core
from coremax.data.simulate.scanner import LAB_RUNS, Scanner
from coremax.data.spe import format_spe
from coremax.errors import UserError
from coremax.io import folder_in_place, write_toml

# Named archives beside the default one (simulate_archive(benchmark=...), scripts/simulate.py --benchmark): the
# same cores, compositions, lab samples and test cores as the default archive of the same seed and size.
BENCHMARKS = {
    # Two runs per spot as labs scan: 10 kV (the default archive's run) and 30 kV with a Pd filter, Br from
    # marine organic carbon.
    "synthetic-2kv": {"kvs": (10.0, 30.0), "lab_runs": True, "marine_bromine": True, "trace_ppm": True},
}


def section_label(start_mm: int, scanner: Scanner) -> str:
    """Section start as labs write it in file names: 4-digit cm, or 6-digit mm on some cruises."""
    return f"{start_mm:06d}" if scanner.section_in_mm else f"{start_mm // 10:04d}"


def file_name(core: str, section: str, pos_mm: float, scanner: Scanner, kv: float) -> str:
    return (f"{core}_{section} {pos_mm:6.1f}mm  {scanner.live_time_s:g}s  {kv:g}kV "
            f"{scanner.current_ua:g}uA {scanner.filter}.spe")


def _write_core(args) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    plan, out, spacing_mm, kvs, section_mm, dense_lab, lab_runs, marine_bromine = args
    sim = simulate_core(plan, spacing_mm, kvs, dense_lab, lab_runs, marine_bromine)
    truth = sim["truth"]
    files = []
    for run, kv in enumerate(kvs, 1):
        scanner = sim["run_scanners"][kv]  # the head, as set for this run
        folder = out / "raw" / plan.core / f"Run {run} at  {kv:g}kV"
        folder.mkdir(parents=True, exist_ok=True)
        for i, depth in enumerate(truth["depth_mm"]):
            start_mm = int(depth // section_mm * section_mm)
            section, pos = section_label(start_mm, scanner), depth - start_mm
            counts = sim["spectra"][kv][i]
            meta = {"spec_id": f"{plan.core} {depth:.0f}", "spec_rem": scanner.head,
                    "date": f"0{1 + plan.scanner}-15-20{10 + plan.scanner * 4} 12:00:00",
                    "live_time_s": scanner.live_time_s, "real_time_s": round(scanner.live_time_s * 1.08, 2),
                    "kv": kv, "current_ma": scanner.current_ua / 1000, "core_id": plan.core,
                    "section_id": section, "header_depth": round(depth, 1), "run_id": str(run),
                    "x_position": round(pos, 1), "y_position": 0.0, "replicate_id": "1",
                    "slit_dc_mm": scanner.slit_dc_mm, "slit_cc_mm": scanner.slit_cc_mm,
                    "total_cps": counts.sum() / scanner.live_time_s, "user_id": "coremax-simulator"}
            name = file_name(plan.core, section, pos, scanner, kv)
            (folder / name).write_bytes(format_spe(counts, meta).encode("utf-8"))
            if run == 1:
                files.append(f"{plan.core}/{folder.name}/{name}")
    truth["source_file"] = files
    return truth, sim["bulk"], sim["dense"]


def simulate_archive(out: str | os.PathLike, seed: int = 0, cores: int = 12, spacing_mm: float = 10.0,
                     kvs=(10.0,), workers: int = 2, section_mm: float = 1500.0, overwrite: bool = False,
                     labelled: bool = True, dense_lab: bool = False, head: Scanner | None = None,
                     lab_runs: bool = False, marine_bromine: bool = False, trace_ppm: bool = False,
                     benchmark: str | None = None) -> dict:
    """Write `<out>/raw/<core>/Run 1 at  10kV/*.spe`, `<out>/bulk.csv` (beside raw/), `<out>/truth.csv` (true
    composition of every spectrum, for tests and analysis only) and `<out>/manifest.toml` (settings and the
    default held-out `test_cores`). The archive is built in a temporary folder and renamed into place.
    `labelled=False` writes an unlabelled pool ("forgotten spectra"): same physics, every scanner head, cores
    named apart, no bulk.csv and no test cores. `dense_lab` also writes `<out>/bulk-dense.csv`, a lab sample at
    every scanned depth, so that a sampling study can "send" any depth to the lab, and `<out>/bulk-newcores-dense.csv`,
    the lab table of that study: bulk.csv's samples of the other cores and a sample at every depth of the test
    cores; the other files stay as they are without it. `head` scans every core with that scanner instead of the
    archive's heads (another instrument: the shift checks' tests). `lab_runs` sets the 30 and 50 kV runs as labs
    do (scanner.LAB_RUNS: filter, current, live time); `marine_bromine` adds Br bound to marine organic carbon
    (bromine.py); `trace_ppm` puts Rb and Zr at their stated ppm (sediment.dry_fractions); `benchmark` names an
    entry of BENCHMARKS, whose settings replace those four. Without them every file is that of the default
    archive."""
    if benchmark is not None:
        if benchmark not in BENCHMARKS:
            raise UserError(f"--benchmark {benchmark!r} is not one of {', '.join(BENCHMARKS)}.")
        kvs, lab_runs, marine_bromine, trace_ppm = (BENCHMARKS[benchmark][k] for k in
                                                    ("kvs", "lab_runs", "marine_bromine", "trace_ppm"))
    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"The folder {out} already exists; pass --overwrite to replace it or choose another --out.")
    if cores < 1 or spacing_mm <= 0:
        raise UserError(f"--cores {cores} and --spacing-mm {spacing_mm} must be positive.")
    plans = [replace(p, head=head, trace_ppm=trace_ppm) for p in plan_archive(seed, cores, labelled)]
    with folder_in_place(out) as tmp:
        jobs = [(p, tmp, spacing_mm, tuple(float(k) for k in kvs), section_mm, dense_lab and labelled, lab_runs,
                 marine_bromine) for p in plans]
        if workers > 1 and len(plans) > 1:
            with ProcessPoolExecutor(min(workers, len(plans))) as pool:
                parts = list(pool.map(_write_core, jobs))
        else:
            parts = [_write_core(j) for j in jobs]
        truth = pd.concat([t for t, _, _ in parts], ignore_index=True)
        bulk = pd.concat([b for _, b, _ in parts], ignore_index=True)
        truth.to_csv(tmp / "truth.csv", index=False)
        if labelled:
            bulk.to_csv(tmp / "bulk.csv", index=False)
        test_cores = default_test_cores(plans) if labelled else []
        if labelled and dense_lab:
            dense = pd.concat([d for _, _, d in parts], ignore_index=True)
            dense.to_csv(tmp / "bulk-dense.csv", index=False)
            pd.concat([bulk[~bulk["core"].isin(test_cores)], dense[dense["core"].isin(test_cores)]],
                      ignore_index=True).to_csv(tmp / "bulk-newcores-dense.csv", index=False)
        manifest = {"generator": "coremax.data.simulate", "seed": seed, "cores": cores, "spacing_mm": spacing_mm,
                    "kv": [float(k) for k in kvs], "spectra": len(truth), "labelled": labelled,
                    "bulk_samples": len(bulk) if labelled else 0,
                    "test_cores": test_cores,
                    "core_regions": {p.core: p.region for p in plans},
                    "core_scanners": {p.core: p.scanner_head.head for p in plans},
                    "scanners": {s.head: {k: v for k, v in asdict(s).items() if k != "head"}
                                 for s in {p.scanner_head: None for p in plans}}}
        manifest.update(_settings(kvs, lab_runs, marine_bromine, trace_ppm, benchmark))
        write_toml(tmp / "manifest.toml", manifest)
    return manifest


def _settings(kvs, lab_runs: bool, marine_bromine: bool, trace_ppm: bool, benchmark: str | None) -> dict:
    """What a benchmark adds to manifest.toml: its name, the run settings and the bromine relation (nothing for
    the default archive, whose manifest stays as it was)."""
    extra = {"benchmark": benchmark} if benchmark else {}
    if trace_ppm:
        extra["trace_ppm"] = True
    runs = {f"{kv:g}": asdict(LAB_RUNS[float(kv)]) for kv in kvs if lab_runs and float(kv) in LAB_RUNS}
    if runs:
        extra["runs"] = runs
    if marine_bromine:
        extra["marine_bromine"] = {"br_ppm_per_marine_toc_wt_pct": bromine.BR_PER_MARINE_TOC,
                                   "site_scatter": bromine.SITE_SCATTER, "spot_scatter": bromine.SPOT_SCATTER,
                                   "marine_share": dict(bromine.MARINE_SHARE)}
    return extra
