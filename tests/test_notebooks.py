"""Every notebook in analysis/ runs top to bottom, headless, on the fixture data set and experiments."""

import json
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ANALYSIS = Path(__file__).resolve().parents[1] / "analysis"
NOTEBOOKS = sorted(ANALYSIS.glob("*.ipynb"))
ENV_VARS = ("COREMAX_DATA_ROOT", "COREMAX_PRETRAIN", "COREMAX_FINETUNE")
QUICK = {"COREMAX_STEPS": "4", "COREMAX_N_SPECTRA": "8"}  # saliency: fewer integration steps and spectra


def test_the_four_notebooks_are_there_and_saved_clean():
    assert {p.name for p in NOTEBOOKS} >= {"data-overview.ipynb", "experiments.ipynb", "saliency.ipynb",
                                           "latent.ipynb"}
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name} has outputs"
        first = code[0].source
        assert all(f'os.environ.get("{v}"' in first for v in ENV_VARS), f"{path.name}: parameters cell"
        assert 'DATA_ROOT = Path(os.environ.get("COREMAX_DATA_ROOT", "../data"))' in first


@pytest.fixture(scope="module")
def notebook_root(data_root, pretrained, finetuned, tmp_path_factory):
    """A copy of the fixture data set and experiments (best checkpoints only), so the figures the notebooks
    write do not land in the shared data root."""
    root = tmp_path_factory.mktemp("notebooks")
    shutil.copytree(data_root / "datasets" / "synthetic", root / "datasets" / "synthetic")
    skip = shutil.ignore_patterns("last.pth", "checkpoint-epoch-*")
    for name in (pretrained, finetuned):
        shutil.copytree(data_root / "experiments" / name, root / "experiments" / name, ignore=skip)
    from coremax.eval.run import evaluate_experiment

    evaluate_experiment(root, finetuned)  # test metrics for the comparison across runs
    return root


def expected_figures(stem: str, pretrained: str, finetuned: str) -> list[str]:
    return {
        "data-overview": [f"datasets/synthetic/figures/{f}.png" for f in ("spectra", "target-histograms",
                                                                           "downcore")],
        "experiments": [f"experiments/{pretrained}/results/training-curves.png",
                        f"experiments/{finetuned}/results/training-curves.png", "analysis/experiments-metrics.png"],
        "saliency": [f"experiments/{finetuned}/results/saliency-integrated_gradients.png",
                     f"experiments/{finetuned}/results/relevance.png"],
        "latent": [f"experiments/{pretrained}/results/latent-pca.png"],
    }.get(stem, [])


def execute(path: Path) -> None:
    """Run a notebook top to bottom in a kernel of this interpreter (its parameters from the environment); fail
    on any cell's error, or when the kernel ran another Python."""
    nb = nbformat.read(path, as_version=4)
    # One more cell reports the kernel's interpreter: it must be this virtual environment's.
    nb.cells.append(nbformat.v4.new_code_cell("import json, sys\nprint(json.dumps([sys.prefix, sys.executable]))"))
    client = NotebookClient(nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(ANALYSIS)}})
    try:
        client.execute()
    except CellExecutionError as err:
        pytest.fail(f"{path.name} failed:\n{err}")
    prefix, executable = json.loads(nb.cells[-1].outputs[0]["text"])
    assert Path(prefix).resolve() == Path(sys.prefix).resolve(), f"the kernel ran {executable}"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, notebook_root, pretrained, finetuned, monkeypatch):
    monkeypatch.setenv("COREMAX_DATA_ROOT", str(notebook_root))
    monkeypatch.setenv("COREMAX_PRETRAIN", pretrained)
    monkeypatch.setenv("COREMAX_FINETUNE", finetuned)
    for var, value in QUICK.items():
        monkeypatch.setenv(var, value)
    execute(path)
    for figure in expected_figures(path.stem, pretrained, finetuned):
        assert (notebook_root / figure).read_bytes()[:4] == b"\x89PNG", f"{path.name} did not write {figure}"
    assert not list(notebook_root.glob("**/*.tmp"))
