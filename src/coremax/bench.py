"""Benchmarks that print figures (tests never time anything).

Training: spectra/s of the real training loop (`trainer.train_epoch`: augmentations, transform, lr schedule,
loss check, optimizer step) on synthetic Poisson counts held in memory, per case = an experiment config
(size, stage, energy window, mask, batch, AMP, compile); peak memory; achieved TFLOP/s from the model's
shapes and, on a GPU with a known peak, the MFU. Each case runs in its own process so its peak memory is
its own. The data path's benchmark: coremax.bench_data.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from coremax import config as configlib
from coremax.data.transforms import make_transform
from coremax.data.window import data_window
from coremax.engine.data import ArrayData, Prepared
from coremax.engine.inference import pred_batch, predict_rows
from coremax.engine.runtime import peak_flops, setup
from coremax.engine.tasks import TASKS
from coremax.engine.trainer import Schedule, train_epoch
from coremax.engine.optim import build_optimizer
from coremax.io import atomic_path
from coremax.models import build_model, peft, train_flops_per_spectrum
from coremax.modes import get_mode

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def cpu_cases() -> list[dict]:
    """The CPU comparisons, each measured in the same run: the shipped CPU recipe against max_tiny on full
    spectra, without its jitter and in fp32, and the ViT-base MAE (mask 0.75, batch 32) in fp32 and bf16."""
    full = ['data.channels=[0, 2048]', 'runtime.device="cpu"']
    return [
        {"name": "tiny, 2048 channels (reference)", "config": "", "overrides": full + ['model.size="tiny"']},
        {"name": "CPU recipe pretrain (window 512)", "config": str(CONFIGS / "cpu-pretrain.toml"), "overrides": []},
        # what the augmentations and the AMP choice cost a step of the recipe
        {"name": "CPU recipe pretrain (window 512), no jitter", "config": str(CONFIGS / "cpu-pretrain.toml"),
         "overrides": [f"data.jitter_{k}=0.0" for k in ("gain", "offset", "width", "absorption")]},
        {"name": "CPU recipe pretrain (window 512), fp32", "config": str(CONFIGS / "cpu-pretrain.toml"),
         "overrides": ['runtime.amp="off"']},
        {"name": "CPU recipe finetune (window 512)", "config": str(CONFIGS / "cpu-finetune.toml"), "overrides": []},
        *peft_cases(*full, "runtime.amp=\"off\""),
        {"name": "base MAE, mask 0.75, batch 32", "config": "", "overrides": full + [
            'model.size="base"', "model.mask_ratio=0.75", "optim.batch_size=32", 'runtime.amp="off"']},
        {"name": "base MAE, mask 0.75, batch 32, bf16", "config": "", "overrides": full + [
            'model.size="base"', "model.mask_ratio=0.75", "optim.batch_size=32", 'runtime.amp="bf16"']},
    ]


def peft_cases(*overrides: str, batch: int = 32) -> list[dict]:
    """Fine-tuning tiny and base in each finetune.mode that trains everything or a part: trainable parameters
    and peak memory side by side."""
    return [{"name": f"{size} finetune {mode}, batch {batch}", "config": "", "overrides": [
        *overrides, 'experiment.stage="finetune"', f'model.size="{size}"', f'finetune.mode="{mode}"',
        f"optim.batch_size={batch}"]} for size in ("tiny", "base") for mode in ("full", "lora", "adapter")]


def gpu_cases() -> list[dict]:
    out = peft_cases('data.channels=[0, 2048]', 'runtime.device="cuda"', 'runtime.amp="bf16"', batch=256)
    for size, batch in (("tiny", 512), ("base", 256)):
        for stage in ("pretrain", "finetune"):
            for channels in ([0, 2048], [0, 512]):
                for amp, compile_ in (("off", False), ("bf16", False), ("bf16", True)):
                    out.append({"name": f"{size} {stage} {channels[1] - channels[0]}ch amp={amp} compile={compile_}",
                                "config": "", "overrides": [
                                    f'model.size="{size}"', f'experiment.stage="{stage}"', f"data.channels={channels}",
                                    f"optim.batch_size={batch}", f'runtime.amp="{amp}"',
                                    f"runtime.compile={str(compile_).lower()}", 'runtime.device="cuda"']})
    return out


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Quiet:
    def info(self, *a, **k):
        pass


def run_case(case: dict, steps: int) -> dict:
    """One case: a resolved config, its model and task on synthetic counts, one warm-up epoch, one timed."""
    cfg = configlib.resolve(case["config"] or None, case["overrides"]).to_dict()
    stage, d, m, o = cfg["experiment"]["stage"], cfg["data"], cfg["model"], cfg["optim"]
    rt = setup(**{**cfg["runtime"], "log_interval_s": 1e9})
    torch.manual_seed(0)
    window = data_window(d, {})  # one run, as the timed cases read
    width, batch = window.width, o["batch_size"]
    rows = batch * steps
    # Counts of the size a 10 kV scan has (a few hundred per channel at the low-energy end).
    x = torch.poisson(torch.full((rows, width), 50.0) * torch.linspace(4, 0.2, width))
    y = torch.randn(rows, len(d["targets"])) if stage == "finetune" else None
    arrays = ArrayData(x, y, pd.DataFrame(index=range(rows)))
    data = Prepared(train=arrays, val=arrays, targets=list(d["targets"]), scaler=None,
                    transform_name=d["transform"], channel_stats=None, augment=d["augment"] and stage == "finetune",
                    augment_min_fraction=d["augment_min_fraction"],
                    jitter=(d["jitter_gain"], d["jitter_offset"], d["jitter_width"]), absorption=d["jitter_absorption"],
                    channels=window, info={})
    model = build_model(stage, len(d["targets"]), width, **m)
    mode = cfg["finetune"]["mode"] if stage == "finetune" else "full"
    get_mode(mode).adapt(model, cfg["finetune"])  # on a random encoder: the cost does not depend on the weights
    model.to(rt.device)
    if rt.data_on_device:
        data.train = data.train.to(rt.device)
    task = TASKS[stage](data, rt)
    optimizer = build_optimizer(model, 1e-4, fused=rt.device.type == "cuda")
    net = torch.compile(model) if rt.compile else model
    sched = Schedule(1e-4, 1e-6, 0.0, 2, batch, 1, o["clip_grad"], data.train.num_batches(batch))
    train_epoch(task, net, model, optimizer, rt, sched, 0, 0, 0, _Quiet(), "-")  # warm-up (and compilation)
    if rt.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    _, _, seen = train_epoch(task, net, model, optimizer, rt, sched, 1, steps, 0, _Quiet(), "-")
    if rt.device.type == "cuda":
        torch.cuda.synchronize()
        peak_mem = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mem = peak_rss_mib()
    speed = seen / (time.perf_counter() - t0)
    # The training state itself, from the tensors: weights, a gradient per trained weight, AdamW's moments.
    nbytes = lambda ts: sum(t.numel() * t.element_size() for t in ts)  # noqa: E731
    state_bytes = (nbytes(model.parameters()) + nbytes(p for p in model.parameters() if p.requires_grad)
                   + nbytes(t for st in optimizer.state.values() for t in st.values() if t.dim()))
    flops = train_flops_per_spectrum(model)
    peak = peak_flops(rt)
    return {"case": case["name"], "device": str(rt.device), "stage": stage, "size": m["size"], "channels": width,
            "batch": batch, "amp": {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[rt.amp_dtype],
            "compile": cfg["runtime"]["compile"], "mode": mode,
            "trainable_params": peft.trainable_params(model),
            "spectra_per_s": round(speed, 1), "tflops": round(flops * speed / 1e12, 3),
            "mfu": round(flops * speed / peak, 3) if peak else float("nan"), "peak_mem_mib": round(peak_mem, 1),
            "state_mib": round(state_bytes / 2**20, 1)}


def bench_train(cases: list[dict], steps: int, show=print) -> pd.DataFrame:
    rows = []
    for case in cases:
        out = subprocess.run([sys.executable, "-c", "import json, sys; from coremax.bench import run_case; "
                              "print(json.dumps(run_case(json.loads(sys.argv[1]), int(sys.argv[2]))))",
                              json.dumps(case), str(steps)], capture_output=True, text=True)
        if out.returncode != 0:
            show(f"{case['name']}: failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        if len(rows) == 1:  # the header: the first row's own keys
            show(" | ".join(rows[0]))
        show(" | ".join(str(v) for v in rows[-1].values()))
    return pd.DataFrame(rows)


# -- the GPU report (scripts/bench_train.py --gpu-report) -------------------------------------------------------
REPORT_BEGIN, REPORT_END = "<!-- gpu-report:begin -->", "<!-- gpu-report:end -->"  # the section --docs replaces
REPORT_BATCH = {"tiny": 512, "base": 256}


def report_cases(device: str = "cuda") -> list[dict]:
    """tiny and base, pretraining and fine-tuning on full spectra, bf16 autocast eager and compiled."""
    return [{"name": f"{size} {stage} bf16{' + compile' if compile_ else ''}", "config": "", "overrides": [
        f'model.size="{size}"', f'experiment.stage="{stage}"', "data.channels=[0, 2048]",
        f"optim.batch_size={batch}", 'runtime.amp="bf16"', f"runtime.compile={str(compile_).lower()}",
        f'runtime.device="{device}"']}
        for size, batch in REPORT_BATCH.items() for stage in ("pretrain", "finetune") for compile_ in (False, True)]


def predict_throughput(spectra: int, device: str = "cuda", size: str = "tiny") -> dict:
    """Spectra/s of the prediction path (engine.inference.predict_rows, as predict.py runs it: fp32, the device's
    batches, outputs back on the CPU) of a `size` regressor over `spectra` synthetic count spectra in host memory;
    one warm-up pass over the first batches first."""
    cfg = configlib.resolve(None, ['experiment.stage="finetune"', f'model.size="{size}"',
                                   "data.channels=[0, 2048]"]).to_dict()
    torch.manual_seed(0)
    width = data_window(cfg["data"], {}).width
    model = build_model("finetune", len(cfg["data"]["targets"]), width, **cfg["model"]).to(device)
    transform = make_transform(cfg["data"]["transform"])
    x = torch.poisson(torch.full((spectra, width), 50.0) * torch.linspace(4, 0.2, width)).numpy()
    batch = pred_batch(device)
    predict_rows(model, x[: 4 * batch], transform=transform)  # warm-up: kernels chosen, memory pooled
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = predict_rows(model, x, transform=transform)
    seconds = time.perf_counter() - t0
    return {"size": size, "device": device, "spectra": len(out), "batch": batch,
            "spectra_per_s": round(len(out) / seconds, 1)}


def cuda_tests(root: Path) -> tuple[int, str]:
    """tests/test_cuda.py in a process of its own: (exit status, pytest's summary line)."""
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider",
                          str(root / "tests" / "test_cuda.py")], capture_output=True, text=True, cwd=root)
    lines = [line for line in out.stdout.strip().splitlines() if line.strip()]
    return out.returncode, (lines[-1].strip("= ") if lines else "no output")


def report_markdown(when: str, command: str, commit: str, device: str, tests: tuple[int, str],
                    train: pd.DataFrame, predict: dict) -> str:
    """The dated section of the docs' benchmarks page: the CUDA tests' result, training spectra/s, TFLOP/s, MFU
    and peak memory per case, and the prediction throughput."""
    lines = [REPORT_BEGIN, f"### GPU report, {when}", "",
             f"Made by `{command}` at commit {commit} on {device}.", "",
             f"CUDA tests (`tests/test_cuda.py`): {tests[1]}" + ("" if tests[0] == 0 else " (FAILED)") + ".", "",
             "| case | batch | spectra/s | TFLOP/s | MFU | peak memory (MiB) |", "|---|---|---|---|---|---|"]
    for r in train.to_dict("records"):
        mfu = r.get("mfu")
        lines.append(f"| {r['case']} | {r['batch']} | {r['spectra_per_s']} | {r['tflops']} | "
                     f"{'n/a' if mfu is None or mfu != mfu else f'{mfu:.1%}'} | {r['peak_mem_mib']} |")
    if train.empty:
        lines.append("| every case failed (see the command's output) | | | | | |")
    lines += ["", f"Prediction (`engine.inference.predict_rows`, fp32, batch {predict['batch']}): a {predict['size']} "
              f"regressor over {predict['spectra']:,} spectra in host memory, {predict['spectra_per_s']:,} spectra/s.",
              REPORT_END]
    return "\n".join(lines) + "\n"


def write_report(page: Path, section: str) -> Path:
    """Replace the marked section of `page` (or add it at the end), atomically."""
    text = page.read_text() if page.is_file() else "# Results: benchmarks\n"
    if REPORT_BEGIN in text and REPORT_END in text:
        head, rest = text.split(REPORT_BEGIN, 1)
        text = head + section.rstrip("\n") + rest.split(REPORT_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with atomic_path(page) as tmp:
        tmp.write_text(text)
    return page
