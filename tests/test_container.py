"""The CUDA development container cannot be built here (no container runtime): its files are checked instead."""

import json
import re

from conftest import ROOT


def test_devcontainer_parses_and_builds_the_dockerfile():
    spec = json.loads((ROOT / ".devcontainer" / "devcontainer.json").read_text())
    assert (ROOT / ".devcontainer" / spec["build"]["dockerfile"]).resolve() == (ROOT / "Dockerfile").resolve()
    assert "--gpus" in spec["runArgs"] and spec["workspaceFolder"] in spec["workspaceMount"]


def test_dockerfile_is_cuda_python311_and_installs_exactly_the_requirements():
    text = (ROOT / "Dockerfile").read_text()
    run = re.sub(r"\\\n", " ", text)
    assert re.search(r"^FROM nvidia/cuda:\S+cudnn\S*runtime", text, re.M)
    assert "python3.11 -m venv" in run
    installs = re.findall(r"pip install ([^&\n]+)", run)
    # pip itself is upgraded; every package comes from requirements.txt (the package too: its `-e .` line)
    assert [i.strip() for i in installs] == ["--upgrade pip", "-r requirements.txt"]
    assert "-e ." in (ROOT / "requirements.txt").read_text().splitlines()
