"""The tutorial runs: every ```bash block of docs/tutorial.md, in order, on a tiny synthetic archive.

The page's ```shell block names the variables a reader sets to their own paths; this test sets the same variables
to a tiny archive it writes (5 cores, two new ones), and QUICK to overrides that shrink every training run to one
epoch of large patches. The commands run in a temporary folder laid out like the repository root (scripts/ and
configs/ linked), so they write its data/ folder, not the repository's.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "tutorial.md"
QUICK = "optim.epochs=1 model.patch_size=64 optim.batch_size=32 runtime.log_interval_s=1000"


def fenced(text: str, language: str) -> list[str]:
    """The code blocks of one language, in page order (an indented block, as in an admonition, dedented)."""
    out = []
    for m in re.finditer(rf"^([ \t]*)```{language}[^\n]*\n(.*?)^\1```", text, re.M | re.S):
        indent = len(m.group(1))
        out.append("\n".join(line[indent:] for line in m.group(2).splitlines()))
    return out


def test_the_page_has_its_blocks():
    text = TUTORIAL.read_text()
    assert len(fenced(text, "shell")) == 1, "the tutorial has one ```shell block: the reader's settings"
    steps = fenced(text, "bash")
    joined = "\n".join(steps)
    for command in ("preprocess.py", "train.py", "test.py", "predict.py", "suggest.py", "archive.py"):
        assert f"scripts/{command}" in joined, f"the tutorial runs no scripts/{command}"


def _archive(tmp: Path) -> dict:
    """A tiny labelled archive (with the scanner software's element table), a compiled-table copy of its spectra,
    two new unlabelled cores and a few lab values of theirs: the tutorial's variables."""
    from coremax.cli import simulate_main
    from coremax.data.raw import read_folder
    from coremax.io import read_toml

    simulate_main(["--out", str(tmp / "archive"), "--cores", "5", "--spacing-mm", "20", "--seed", "1",
                   "--workers", "1", "--elements", "--quiet"])
    simulate_main(["--out", str(tmp / "new"), "--cores", "2", "--spacing-mm", "20", "--seed", "5",
                   "--workers", "1", "--unlabelled", "--quiet"])
    meta, counts, _ = read_folder(tmp / "archive" / "raw")
    spectra = pd.concat([meta[["source_file"]], pd.DataFrame(counts, columns=[str(i) for i in range(counts.shape[1])])],
                        axis=1)
    spectra.to_parquet(tmp / "spectra.parquet")
    meta[["source_file", "core", "depth_mm", "section", "position_mm", "kv", "live_time_s", "current_ma",
          "scanner"]].to_csv(tmp / "info.csv", index=False)
    # The first lab values of the new cores: the true composition of five spectra of each.
    truth = pd.read_csv(tmp / "new" / "truth.csv")
    truth.groupby("core").head(5)[["core", "depth_mm", "CaCO3", "TOC"]].to_csv(tmp / "new-lab.csv", index=False)
    return {"RAW": str(tmp / "archive" / "raw"), "LAB": str(tmp / "archive" / "bulk.csv"),
            "TEST_CORES": ",".join(read_toml(tmp / "archive" / "manifest.toml")["test_cores"]),
            "NEW": str(tmp / "new" / "raw"), "NEW_LAB": str(tmp / "new-lab.csv"),
            "TABLE": str(tmp / "spectra.parquet"), "INFO": str(tmp / "info.csv"),
            "ELEMENTS": str(tmp / "archive" / "elements.csv"), "QUICK": QUICK}


@pytest.mark.slow
def test_the_tutorial_runs(tmp_path):
    text = TUTORIAL.read_text()
    settings = fenced(text, "shell")[0]
    work = tmp_path / "work"
    work.mkdir()
    for folder in ("scripts", "configs"):
        (work / folder).symlink_to(ROOT / folder)
    variables = _archive(tmp_path)
    named = set(re.findall(r"^(\w+)=", settings, re.M))
    assert named == set(variables), f"the tutorial's settings name {sorted(named)}, the test sets {sorted(variables)}"
    env = {**os.environ, **variables, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for i, block in enumerate(fenced(text, "bash"), 1):
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=work, env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, f"tutorial block {i} failed:\n{block}\n--- output:\n" \
                                     f"{(done.stdout + done.stderr)[-3000:]}"
    # What the page says each step leaves behind.
    experiments = work / "data" / "experiments"
    for name in ("my-lpft", "my-nmf-svr", "my-mlc"):
        assert (experiments / name / "results" / "test-metrics.pkl").is_file(), name
    assert list((experiments / "my-lpft" / "results").glob("test-profile-*.png"))
    for name in ("mycores", "mycores-table", "mycores-elements"):
        assert (work / "data" / "datasets" / name / "info.toml").is_file(), name
    for path in ("profiles/predictions.csv", "profiles/predictions-cores.csv", "profiles/recalibrated.csv",
                 "suggest/next-samples.csv", "mycores.tar.gz", "my-pretrain.tar.gz", "my-lpft.tar.gz"):
        assert (work / path).is_file(), path
    assert len(pd.read_csv(work / "suggest" / "next-samples.csv")) == 20  # 10 depths of each new core
