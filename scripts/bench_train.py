#!/usr/bin/env python
"""Training throughput (spectra/s) and peak memory of max_* pretraining and regressor fine-tuning.

    python scripts/bench_train.py                         # tiny and base, CPU (and GPU variants when present)
    python scripts/bench_train.py --sizes tiny --steps 5  # quicker

Each case runs in its own process so that peak memory (max RSS on the CPU, max allocated on a GPU) is its own.
"""
import argparse
import json
import resource
import subprocess
import sys
import time


def run_case(stage, size, device, amp, compile_, batch, steps, length):
    import torch

    from coremax.engine.optim import build_optimizer
    from coremax.models import build_max, build_regressor
    from coremax.models.regressor import masked_mse

    torch.manual_seed(0)
    model = build_max(size=size, spectrum_length=length) if stage == "pretrain" else \
        build_regressor(2, size=size, spectrum_length=length)
    model.to(device).train()
    opt = build_optimizer(model, 1e-4)
    net = torch.compile(model) if compile_ else model
    x = torch.randn(batch, length, device=device)
    y = torch.randn(batch, 2, device=device)
    dtype = torch.bfloat16 if amp == "bf16" else None

    def step():
        with torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None):
            loss = net(x)[0] if stage == "pretrain" else masked_mse(net(x).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(2):  # warm-up (and compilation)
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    dt = time.perf_counter() - t0
    return {"stage": stage, "model": f"max_{size}", "device": device, "amp": amp, "compile": compile_,
            "batch": batch, "spectra_per_s": round(batch * steps / dt, 1), "peak_mem_mib": round(peak, 1)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="tiny,base")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--length", type=int, default=2048)
    p.add_argument("--case", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        print(json.dumps(run_case(**json.loads(args.case))))
        return
    import torch

    cases = []
    for size in args.sizes.split(","):
        for stage in ("pretrain", "finetune"):
            cases.append(dict(stage=stage, size=size, device="cpu", amp="off", compile_=False))
            if torch.cuda.is_available():
                for amp in ("off", "bf16"):
                    for comp in (False, True):
                        cases.append(dict(stage=stage, size=size, device="cuda", amp=amp, compile_=comp))
    print(f"{'stage':9} {'model':10} {'device':6} {'amp':5} {'compile':7} {'batch':>5} {'spectra/s':>10} "
          f"{'peak MiB':>9}")
    for c in cases:
        c.update(batch=args.batch, steps=args.steps, length=args.length)
        out = subprocess.run([sys.executable, __file__, "--case", json.dumps(c)], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{c['stage']:9} max_{c['size']:6} failed: {out.stderr.strip().splitlines()[-1]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['stage']:9} {r['model']:10} {r['device']:6} {r['amp']:5} {str(r['compile']):7} {r['batch']:>5} "
              f"{r['spectra_per_s']:>10} {r['peak_mem_mib']:>9}")


if __name__ == "__main__":
    main()
