"""predict.py over an archive: the cores one at a time in a fixed memory, each core's table written to
`<out>.parts/` as it is done (Parquet, atomically, with a record of the files it read), so that a re-run skips
finished cores and a killed run leaves no half-written file; at the end the parts are joined into `--out`
(Parquet, or CSV for a .csv name), `<out>-cores.csv` and the warnings.

A part is reused only when its record matches: the same model (its checkpoints' or bundle's hash), the same
options and the same files of that core (names, sizes and modification times). Anything else and the core is
predicted again."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from coremax.data.bulk import read_bulk
from coremax.data.raw import find_runs, no_files
from coremax.engine.runtime import freed_memory_returned
from coremax.errors import UserError
from coremax.eval.predict import Model, open_model, predict_core
from coremax.eval.shift import shift_warnings
from coremax.io import atomic_path, file_sha256, write_text

RUN = ".run.json"  # the model and options of the parts (a core's name never starts with '.': no clash)


def cores_file(out: Path) -> Path:
    """The per-core table beside the predictions."""
    return out.with_name(f"{out.stem}-cores.csv")


def core_folders(raw) -> list[Path]:
    """Each core's folder under `raw` (<core>/<run>/*.spe, or one core's folder), in name order; `raw` itself when
    it is one run folder (only that run is read, as before)."""
    root, runs = find_runs(raw, None)
    if not runs:
        raise no_files(root, None)
    if len(runs) == 1 and runs[0].resolve() == Path(raw).resolve():
        return runs
    return list(dict.fromkeys(run.parent for run in runs))


def part_name(folder: Path) -> str:
    """The name of a core folder's part: the folder's name made safe (an archive's folders may hold spaces),
    with a hash of the name, so that two folders never share a part (and a moved archive keeps its parts)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", folder.name).lstrip(".")[:60]
    return f"{safe}-{hashlib.sha256(folder.name.encode()).hexdigest()[:10]}"


def fingerprint(folder: Path) -> str:
    """The files of a core folder as found: name, size and modification time (a changed file is predicted
    again without reading every file of the archive twice)."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(folder).as_posix()} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def predict_raw(data_root, name: str | None, raw, out, device: str = "cpu", on_error: str = "skip",
                percentile: float = 99.0, allow_changed_data: bool = False, bulk=None, match_mm: float = 5.0,
                model=None, progress: bool = True) -> tuple[dict, list[str]]:
    """Predict every spectrum under `raw` (all runs) with the experiment `name` or the bundle `model`; writes
    `out`, `<out>-cores.csv` and one profile figure per core; returns ({spectra, cores, reused}, warnings)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(out.parent, os.W_OK):  # say so before the work, not after it
        raise UserError(f"Cannot write {out}: its folder is not writable; choose another --out.")
    freed_memory_returned()  # each core's buffers go back when it is done: a fixed memory over any archive
    m = open_model(data_root, name, model, device, percentile, allow_changed_data)
    lab = read_bulk(bulk) if bulk is not None else None  # a bad table is refused before the work
    folders = core_folders(raw)
    parts = out.with_name(f"{out.name}.parts")
    run = {"parts": 2, "model": m.identity, "percentile": percentile, "on_error": on_error, "match_mm": match_mm,
           "bulk": file_sha256(bulk) if bulk is not None else "", "allow_changed_data": allow_changed_data}
    if _record(parts / RUN) not in (None, run):
        shutil.rmtree(parts)  # parts of another model or other options: nothing of them is reused
    parts.mkdir(exist_ok=True)
    for stale in [*parts.glob(".*.tmp"), *out.parent.glob(f".{out.name}.*.tmp")]:  # what a killed run was
        stale.unlink()  # writing (atomic_path's temporaries): never a part, never the output
    write_text(parts / RUN, json.dumps(run, sort_keys=True))
    records, reused, spectra = [], 0, 0
    bar = _bar(len(folders), progress)
    for folder in folders:
        record, done = parts / f"{part_name(folder)}.json", parts / f"{part_name(folder)}.parquet"
        stamp = fingerprint(folder)
        old = _record(record) if done.is_file() else None
        if old is None or old.get("files") != stamp:
            table, cores, counts = predict_core(m, folder, out, on_error, lab, match_mm)
            old = {"files": stamp, "cores": json.loads(cores.to_json(orient="records")), **counts}
            if table is not None:  # a folder of unreadable files has no part: it is read again next time
                with atomic_path(done) as tmp:
                    table.to_parquet(tmp, index=False)
                write_text(record, json.dumps(old, default=str))  # after the part: a record means a whole part
        else:
            reused += 1
        records.append((done, old))
        spectra += old["spectra"]
        bar.update(1)
        bar.set_postfix(spectra=spectra)
    bar.close()
    if not spectra:  # nothing to write: the parts folder goes too
        shutil.rmtree(parts)
        first = next((s for _, r in records for s in r["skipped"]), {"file": raw, "reason": "no spot has every run"})
        raise UserError(f"No spectrum under {raw} could be predicted (first: {first['file']}: {first['reason']}); "
                        "check --raw.")
    _join([p for p, r in records if r["spectra"]], out)
    cores = pd.DataFrame([c for _, r in records for c in r["cores"]])
    with atomic_path(cores_file(out)) as tmp:
        cores.to_csv(tmp, index=False)
    warnings = _warnings(m, [r for _, r in records], cores, percentile, model, bulk, lab)
    shutil.rmtree(parts)  # the output is whole: the parts are not needed again
    return {"spectra": spectra, "cores": len(folders), "reused": reused}, warnings


def _record(path: Path) -> dict | None:
    """A part's (or the run's) JSON record; None when there is none or it cannot be read (predicted again)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _bar(total: int, shown: bool):
    from tqdm import tqdm  # deferred: only where a bar is drawn

    return tqdm(total=total, desc="cores", unit="core", file=sys.stderr, disable=not shown, leave=False)


def _join(paths: list[Path], out: Path) -> None:
    """The parts as one file, part by part (a fixed memory): Parquet, or CSV for a .csv name; columns a part
    lacks (a core without lab samples has no `<t>_lab`) are empty there."""
    schema = pa.unify_schemas([pq.read_schema(p) for p in paths], promote_options="permissive")
    with atomic_path(out) as tmp:
        writer = pq.ParquetWriter(tmp, schema) if out.suffix.lower() != ".csv" else None
        for k, p in enumerate(paths):
            t = pq.read_table(p)
            t = pa.Table.from_arrays([t.column(f.name).cast(f.type) if f.name in t.column_names
                                      else pa.nulls(len(t), f.type) for f in schema], schema=schema)
            if writer is not None:
                writer.write_table(t)
            else:
                t.to_pandas().to_csv(tmp, index=False, mode="w" if k == 0 else "a", header=k == 0)
        if writer is not None:
            writer.close()


def _warnings(m: Model, records, cores, percentile, model, bulk, lab) -> list[str]:
    n = sum(r["spectra"] for r in records)
    out = []
    if m.checks is None:
        out.append(f"warning: {Path(model).name} was written before bundles carried the distribution checks' "
                   "reference (write it again), so the scanner, out-of-distribution and core-shift checks were "
                   "skipped; only the tube voltage is checked, and the intervals "
                   "are calibrated only for spectra like the training ones.")
    n_kv = sum(r["flag_kv"] for r in records)
    if n_kv:
        out.append(f"warning: {n_kv} of {n} spectra were measured at another tube voltage than the training data "
                   f"({m.kv:g} kV); treat their predictions with care.")
    if m.checks is not None:
        counts = {k: sum(r[k] for r in records) for k in ("spectra", "flag_scanner", "flag_ood")}
        counts["scanner_reason"] = next((r["scanner_reason"] for r in records if r["scanner_reason"]), "")
        out += shift_warnings(counts, cores, percentile)  # from each core's counts: no flag is read back
    for r in (x for rec in records for x in rec["recalibrated"]):
        out.append(f"note: core {r['core']} {r['target']} recalibrated on {r['samples']} lab samples ({r['method']}: "
                   f"bias before {r['bias_before']:+.2f}, leave-one-out RMSE {r['loo_rmse']:.2f}); predictions at "
                   "those depths are fitted, not independent skill.")
    unmatched = [u for rec in records for u in rec["unmatched"]]
    if lab is not None:
        matched_cores = {c for rec in records for c in (x["core"] for x in rec["cores"])}
        unmatched += [{"core": c, "depth_mm": d, "reason": "no predicted core of that name"}
                      for c, d in zip(lab["core"], lab["depth_mm"]) if str(c) not in matched_cores]
    if unmatched:
        first = unmatched[0]
        out.append(f"warning: {len(unmatched)} of the {len(lab)} lab samples of {bulk} matched no spectrum "
                   f"(first: core {first['core']} at {float(first['depth_mm']):g} mm: {first['reason']}); they were "
                   "not used.")
    if m.changed:
        out.append(f"warning: the data set changed since training ({', '.join(m.changed)}); the intervals are "
                   "calibrated on validation rows the experiment may not have held out.")
    skipped = [s for r in records for s in r["skipped"]]
    if skipped:
        out.append(f"warning: {len(skipped)} files could not be read and were skipped (first: {skipped[0]['file']}: "
                   f"{skipped[0]['reason']}).")
    dropped = sum(r["dropped"] for r in records)
    if dropped:
        out.append(f"warning: {dropped} spectra belong to spots lacking one of the model's runs and were not "
                   "predicted.")
    return out
