"""The benchmarks' commands (scripts/bench_train.py, scripts/bench_data.py)."""

from __future__ import annotations

import argparse

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
    args = parse(p, argv)
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


@guard
def bench_data_main(argv=None) -> None:
    from coremax.bench import bench_data  # deferred

    p = argparse.ArgumentParser(description="Data path at scale: simulate an unlabelled pool of N spectra as .spe "
                                            "files, read them (files/s), fit them into element intensities "
                                            "(spectra/s), preprocess, then report the data set's "
                                            "size on disk, the time to read its energy window and peak RSS.")
    p.add_argument("--spectra", type=int, default=20_000, help="pool size (the 10^6 target: 1000000)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--elements", action="store_true",
                   help="instead: the element fit against the simulator's truth on the embedded archive (per "
                        "element r, scale, repeated-measurement scatter over the reported sd) and its spectra/s")
    args = parse(p, argv)
    if args.spectra < 1 or args.workers < 1:
        raise UserError("--spectra and --workers must be at least 1.")
    if args.elements:
        from coremax.bench_elements import against_truth  # deferred

        against_truth()
        return
    bench_data(args.spectra, args.workers)
