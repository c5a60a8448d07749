"""Where and how a run executes: device, mixed precision, threads, seeds, and torchrun processes."""

from __future__ import annotations

import contextlib
import importlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from coremax.config import consumes
from coremax.errors import UserError


@dataclass
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None       # None = full precision
    scaler: torch.amp.GradScaler | None  # only for fp16
    compile: bool
    data_on_device: bool
    pin_mem: bool
    save_every: int
    tensorboard: bool
    log_interval_s: float
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def describe(self) -> str:
        amp = {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]
        return f"{self.device} amp={amp} world_size={self.world_size}"


@consumes("runtime")  # the keys a caller leaves out come at the schema's defaults
def setup(*, device: str, threads: int, data_on_device: bool, pin_mem: bool, amp: str, compile: bool,
          save_every: int, tensorboard: bool, log_interval_s: float) -> Runtime:
    """Consumes the [runtime] section. Under torchrun (RANK/WORLD_SIZE set) it joins the process group:
    gloo on the CPU, nccl on GPUs, one GPU per local rank."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"runtime.device = {device!r} but no CUDA GPU is visible; use runtime.device=\"cpu\" "
                            "or \"auto\".")
        dev = torch.device("cuda", local_rank if world_size > 1 else (torch.device(device).index or 0))
        torch.cuda.set_device(dev)
    elif device == "cpu":
        dev = torch.device("cpu")
    else:
        raise UserError(f"runtime.device = {device!r} is not understood; use auto, cpu, cuda or cuda:N.")
    if tensorboard:
        try:
            importlib.import_module("torch.utils.tensorboard")  # optional: checked before anything runs
        except ImportError:
            raise UserError("runtime.tensorboard = true needs the tensorboard package: pip install "
                            "tensorboard (it is in requirements.txt), or set runtime.tensorboard = false.") from None
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    if threads > 0:
        torch.set_num_threads(threads)

    amp_dtype, scaler = None, None
    if amp == "auto":
        amp = ("bf16" if cpu_has_bf16() else "off") if dev.type == "cpu" else \
            ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    if amp == "bf16":
        amp_dtype = torch.bfloat16
    elif amp == "fp16":
        if dev.type != "cuda":
            raise UserError("runtime.amp = \"fp16\" needs a CUDA GPU; use \"bf16\" or \"off\" on the CPU.")
        amp_dtype = torch.float16
        scaler = torch.amp.GradScaler("cuda")
    return Runtime(dev, amp_dtype, scaler, compile, data_on_device and dev.type == "cuda",
                   pin_mem and dev.type == "cuda", save_every, tensorboard, log_interval_s, rank, world_size,
                   local_rank)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX): only then is bf16 autocast faster;
    elsewhere it is emulated and slower."""
    try:
        flags = next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "")
    except OSError:  # not Linux: stay in full precision
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


# Dense bf16 tensor-core peak (FLOP/s) by GPU name, for the MFU; an unknown GPU gets no MFU.
BF16_PEAK = {"H200": 989e12, "H100 SXM": 989e12, "H100 80GB HBM3": 989e12, "H100 NVL": 835e12,
             "H100 PCIe": 756e12, "H100": 756e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}


def peak_flops(rt: Runtime) -> float | None:
    """The device's dense bf16 peak per process, or None (CPU, unknown GPU)."""
    if rt.device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(rt.device)
    return next((v for k, v in BF16_PEAK.items() if k in name), None)


M_MMAP_THRESHOLD = -3      # glibc's mallopt parameter (malloc.h)
MMAP_THRESHOLD = 1 << 20   # bytes: blocks this large are mapped apart and go back to the system when freed


def freed_memory_returned() -> bool:
    """Make glibc map every block of MMAP_THRESHOLD bytes or more on its own, so that freeing it gives the memory
    back at once. Left to itself glibc raises that threshold as blocks are freed and serves a network's batches
    from a heap that grows with each core's differently sized ones: prediction over 10^5 spectra peaked at 2.3 GB,
    at 0.7 GB with this and smaller CPU batches (docs/results/benchmarks.md). False (nothing done) where the C
    library is not glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):  # macOS, musl without mallopt, Windows
        return False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def all_reduce_sum(values: torch.Tensor, rt: Runtime) -> torch.Tensor:
    """Sum a tensor over processes (a no-op in a single process)."""
    if rt.distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def cleanup(rt: Runtime) -> None:
    if rt.distributed and dist.is_initialized():
        dist.destroy_process_group()
