"""What a run records about where it ran: the code version, the installed packages, the machine and device."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from importlib.metadata import distributions
from pathlib import Path

import pandas as pd


def _git(*args: str, cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def code_version() -> tuple[dict, str]:
    """Commit, branch and dirty flag of the repository the package runs from, and its uncommitted diff."""
    here = Path(__file__).resolve().parent
    top = _git("rev-parse", "--show-toplevel", cwd=here)
    if top is None:
        return {"commit": "unknown", "branch": "unknown", "dirty": False}, ""
    top = Path(top.strip())
    commit = (_git("rev-parse", "HEAD", cwd=top) or "unknown").strip()
    branch = (_git("rev-parse", "--abbrev-ref", "HEAD", cwd=top) or "unknown").strip()
    status = _git("status", "--porcelain", "--untracked-files=no", cwd=top) or ""
    patch = (_git("diff", "HEAD", "--binary", cwd=top) or "") if status.strip() else ""
    return {"commit": commit, "branch": branch, "dirty": bool(status.strip())}, patch


def device_info(device: str = "cpu") -> dict:
    """The machine a run used: the CPU always; on CUDA also the GPU's name, memory, compute capability and the
    CUDA and cuDNN versions torch runs with."""
    import torch  # here, not at the top: commands that never train (archive, preprocess) start without torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"type": "cpu", "cpu": cpu, "cores": os.cpu_count() or 1}
    if str(device).startswith("cuda") and torch.cuda.is_available():
        idx = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(idx)
        info.update(type="cuda", name=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}", count=torch.cuda.device_count(),
                    cuda=torch.version.cuda or "", cudnn=str(torch.backends.cudnn.version() or ""))
    else:
        info["name"] = cpu
    return info


def installed_packages() -> str:
    """`pip freeze`-style lines (name==version) of every installed distribution, sorted."""
    names = {f"{d.metadata['Name']}=={d.version}" for d in distributions() if d.metadata["Name"]}
    return "\n".join(sorted(names, key=str.lower)) + "\n"


def environment() -> dict:
    import numpy
    import torch  # as in device_info

    return {
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "numpy": numpy.__version__, "pandas": pd.__version__},
        "platform": {"os": platform.platform(), "host": socket.gethostname()},
    }


