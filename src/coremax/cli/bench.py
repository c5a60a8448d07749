"""The benchmarks' commands (scripts/bench_train.py, scripts/bench_data.py)."""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

from coremax.errors import UserError

from coremax.cli.common import guard, parse


@guard
def bench_train_main(argv=None) -> None:
    import torch

    from coremax.bench import bench_train, cpu_cases, gpu_cases  # deferred

    p = argparse.ArgumentParser(description="Training throughput of the real training loop: spectra/s, achieved "
                                            "TFLOP/s, MFU on a GPU, peak memory; CPU cases, and GPU cases when a "
                                            "GPU is present.")
    p.add_argument("--steps", type=int, default=10, help="timed optimizer steps per case (after one warm-up epoch)")
    p.add_argument("--only", default="", help="run only the cases whose name contains this text")
    p.add_argument("--no-gpu", action="store_true", help="skip the GPU cases even when a GPU is present")
    p.add_argument("--gpu-report", action="store_true",
                   help="instead: on a CUDA machine, the CUDA tests, bf16 and bf16 + torch.compile training of tiny "
                        "and base (spectra/s, TFLOP/s, MFU), prediction spectra/s of a tiny model, as a dated "
                        "Markdown section (exit status 2 without a GPU)")
    p.add_argument("--predict-spectra", type=int, default=100_000, help="with --gpu-report: spectra predicted "
                                                                        "(default: 100000)")
    p.add_argument("--docs", metavar="PAGE.md", help="with --gpu-report: also write the section into this page, "
                                                     "replacing its marked GPU report (docs/results/benchmarks.md)")
    args = parse(p, argv)
    if args.gpu_report:
        return _gpu_report(args, argv)
    cases = cpu_cases() + (gpu_cases() if torch.cuda.is_available() and not args.no_gpu else [])
    cases = [c for c in cases if args.only in c["name"]]
    if not cases:
        raise UserError(f"No benchmark case matches --only {args.only!r}.")
    table = bench_train(cases, args.steps)
    if table.empty:
        raise UserError("Every benchmark case failed; the lines above say why.")
    ref = table.set_index("case")["spectra_per_s"]
    pairs = [("CPU recipe pretrain (window 512)", "tiny, 2048 channels (reference)"),
             ("base MAE, mask 0.75, batch 32, bf16", "base MAE, mask 0.75, batch 32")]
    for a, b in pairs:
        if a in ref and b in ref:
            print(f"{a} / {b}: {ref[a] / ref[b]:.2f}x")


def _gpu_report(args, argv) -> None:
    """scripts/bench_train.py --gpu-report: refused in one sentence without CUDA, before anything runs."""
    import torch

    from coremax import bench  # deferred
    from coremax.provenance import code_version  # deferred

    if not torch.cuda.is_available():
        raise UserError("--gpu-report needs a CUDA GPU and torch sees none on this machine; run it on a GPU "
                        "machine (the CPU cases: scripts/bench_train.py without --gpu-report).")
    if args.predict_spectra < 1:
        raise UserError(f"--predict-spectra {args.predict_spectra} must be at least 1.")
    root = Path(__file__).resolve().parents[3]
    print("CUDA tests (tests/test_cuda.py) ...", flush=True)
    tests = bench.cuda_tests(root)
    print(tests[1], flush=True)
    cases = [c for c in bench.report_cases() if args.only in c["name"]]
    table = bench.bench_train(cases, args.steps)
    predict = bench.predict_throughput(args.predict_spectra)
    version = code_version()[0]
    commit = version["commit"][:7] + (" with uncommitted changes" if version["dirty"] else "")
    command = " ".join(["python scripts/bench_train.py", *(argv if argv is not None else sys.argv[1:])])
    section = bench.report_markdown(date.today().isoformat(), command, commit, torch.cuda.get_device_name(0),
                                    tests, table, predict)
    print(section)
    if args.docs:
        print(f"GPU report written into {bench.write_report(Path(args.docs), section)}")
    if tests[0] != 0:
        raise UserError(f"The CUDA tests failed ({tests[1]}); the figures above are written, the tests need a look "
                        "(python -m pytest tests/test_cuda.py).")


@guard
def bench_data_main(argv=None) -> None:
    from coremax.bench_data import bench_data  # deferred

    p = argparse.ArgumentParser(description="Data path at scale, per pool size: simulate an unlabelled pool of N "
                                            "spectra as .spe files, preprocess it in a process of its own, then "
                                            "report spectra/s and that process's peak RSS, the element fit's "
                                            "spectra/s, the data set's size on disk and the time to read its "
                                            "energy window.")
    p.add_argument("--spectra", default="10000,100000,1000000",
                   help="pool sizes, comma-separated (default: 10000,100000,1000000; a quick run: 10000)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--elements", action="store_true",
                   help="instead: the element fit against the simulator's truth on the embedded archive (per "
                        "element r, scale, repeated-measurement scatter over the reported sd) and its spectra/s")
    args = parse(p, argv)
    try:
        sizes = [int(v) for v in args.spectra.split(",")]
    except ValueError:
        raise UserError(f"--spectra {args.spectra!r} must be comma-separated whole numbers, e.g. 10000,100000.") from None
    if min(sizes) < 1 or args.workers < 1:
        raise UserError("--spectra and --workers must be at least 1.")
    if args.elements:
        from coremax.bench_elements import against_truth  # deferred

        against_truth()
        return
    bench_data(sizes, args.workers)


@guard
def bench_predict_main(argv=None) -> None:
    import torch

    from coremax.bench_predict import bench_predict  # deferred

    p = argparse.ArgumentParser(description="Prediction at archive scale: train a tiny MSM regressor and a PLS "
                                            "baseline on a small synthetic archive, then predict an unlabelled "
                                            "archive of N spectra with scripts/predict.py in a process of its own "
                                            "and report spectra/s and peak RSS per model (on CUDA too when present).")
    p.add_argument("--spectra", type=int, default=10_000, help="spectra to predict (default: 10000; 100000 for "
                                                               "the docs' figure)")
    args = parse(p, argv)
    if args.spectra < 1:
        raise UserError("--spectra must be at least 1.")
    bench_predict(args.spectra, ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
