"""One place per concern: the package's imports run one way (no circles, counting the few imports deferred
into a function for start-up time), every module imports alone, and every script is a thin call of its
entry point in coremax.cli."""

import ast
import re
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

SRC = ROOT / "src"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted((SRC / "coremax").rglob("*.py"))}


def imports(path: Path) -> tuple[set[str], list[str]]:
    """(coremax modules this file imports anywhere, those imported inside a function without saying why)."""
    text = path.read_text()
    lines = text.splitlines()
    tree = ast.parse(text)
    found, nested = set(), []
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from coremax.eval import figures` imports the submodule coremax.eval.figures
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                     for a in node.names]
        names = [n for n in names if n.split(".")[0] == "coremax" and n != "coremax"]
        found.update(names)
        if names and id(node) not in top and "# deferred" not in lines[node.lineno - 1]:
            nested += names
    return found, nested


def test_no_import_circles_and_no_unexplained_imports_in_functions():
    graph = {m: imports(p)[0] & set(MODULES) for m, p in MODULES.items()}
    for m, p in MODULES.items():
        assert not imports(p)[1], f"{m} imports {imports(p)[1]} inside a function: import it at the top, " \
            "or mark it '# deferred: <why>' (it still counts in the graph)"
    state = {}

    def visit(m, path):
        state[m] = "open"
        for dep in sorted(graph[m]):
            if state.get(dep) == "open":
                raise AssertionError("import circle: " + " -> ".join(path[path.index(dep):] + [dep]))
            if dep not in state:
                visit(dep, path + [dep])
        state[m] = "done"

    for m in MODULES:
        if m not in state:
            visit(m, [m])


def layer_of(module: str) -> int:
    """The index in coremax.LAYERS of a module's top-level part (coremax.eval.run -> "eval")."""
    from coremax import LAYERS

    part = module.split(".")[1]
    found = [i for i, names in enumerate(LAYERS) if part in names]
    assert found, f"{module} is on no layer of coremax.LAYERS: add {part!r} to the layer it belongs to"
    return found[0]


def test_imports_only_point_down_the_layers():
    upward = [f"{m} (layer {layer_of(m)}) imports {dep} (layer {layer_of(dep)})"
              for m, p in MODULES.items() if m != "coremax"
              for dep in sorted(imports(p)[0] & set(MODULES)) if dep != "coremax" and layer_of(dep) > layer_of(m)]
    assert not upward, "imports that point up the layers:\n" + "\n".join(upward)


def test_the_layer_check_catches_an_upward_import(tmp_path):
    """The check above can fail: a data module importing coremax.stages is an upward import."""
    bad = tmp_path / "bad.py"
    bad.write_text("from coremax.stages import run_stage\n")
    assert layer_of("coremax.stages") > layer_of("coremax.data.bad")
    assert "coremax.stages" in imports(bad)[0]


# One fresh interpreter loads the third-party libraries once, then forks a child per module: each child starts
# with no coremax module loaded and imports that one alone (a minute of start-ups saved, the same proof).
EACH_ALONE = """
import importlib, os, sys, traceback
import matplotlib.figure, numpy, pandas, pyarrow.parquet, scipy.signal, skops.io, structlog, torch, xraylib
import sklearn.cross_decomposition, sklearn.decomposition, sklearn.linear_model, sklearn.pipeline, sklearn.svm
assert not [m for m in sys.modules if m.split(".")[0] == "coremax"]
failed = []
for m in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(m)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    if os.waitpid(pid, 0)[1]:
        failed.append(m)
sys.exit("failed alone: " + " ".join(failed) if failed else 0)
"""


def test_every_module_imports_alone_in_a_fresh_interpreter():
    res = subprocess.run([sys.executable, "-c", EACH_ALONE, *MODULES], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(MODULES) > 30


def test_scripts_are_thin_calls_of_coremax_cli():
    from coremax import cli

    for script in sorted((ROOT / "scripts").glob("*.py")):
        tree = ast.parse(script.read_text())
        imported = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        entry = cli.ENTRY_POINTS.get(script.stem, f"{script.stem}_main")
        assert [(i.module, [a.name for a in i.names]) for i in imported] == \
            [("coremax.cli", [entry])], f"{script.name} must only call coremax.cli.{entry}"
        assert callable(getattr(cli, entry))


def test_no_library_function_is_named_like_a_test():
    named = [f"{m}.{n.name}" for m, p in MODULES.items() for n in ast.walk(ast.parse(p.read_text()))
             if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name.startswith("test_")]
    assert not named, f"library functions named like pytest tests: {named}"


def test_the_architecture_page_names_every_module_and_script():
    """docs/architecture.md: its layer table is coremax.LAYERS, and its layout names every file of the package
    (each under its own folder) and every script, and no file that does not exist."""
    from coremax import LAYERS

    page = (ROOT / "docs" / "architecture.md").read_text()
    layers = page.split("## The layers", 1)[1].split("\n## ", 1)[0]
    rows = [tuple(n.strip() for n in m.group(2).split(","))
            for m in re.finditer(r"^\| (\d+) \| ([\w, ]+) \|", layers, re.M)]
    assert rows == [tuple(layer) for layer in LAYERS], "docs/architecture.md's layer table differs from coremax.LAYERS"
    layout = page.split("## Layout", 1)[1].split("\n## ", 1)[0]
    # An entry runs from its line to the next line that starts another: the package's folders are indented by two
    # spaces ("  eval/   ..."), the repository's folders ("scripts/") are not.
    entries = re.split(r"\n(?=\S|  \S)", layout)
    packages = {m.group(1): e for e in entries if (m := re.match(r"  (\S+/)\s", e))}
    top = {m.group(1): e for e in entries if (m := re.match(r"(\S+/)\s", e))}
    files = [p for p in (SRC / "coremax").rglob("*") if p.suffix in (".py", ".toml") and p.name != "__init__.py"]
    missing = []
    for p in files:
        folder = p.parent.relative_to(SRC / "coremax").as_posix()
        text = layout if folder == "." else packages.get(f"{folder}/", "")
        if p.name not in text:
            missing.append(str(p.relative_to(ROOT)))
    missing += [str(p.relative_to(ROOT)) for p in sorted((ROOT / "scripts").glob("*.py"))
                if p.name not in top.get("scripts/", "")]
    assert not missing, f"docs/architecture.md's layout does not name {missing}"
    named = set(re.findall(r"[\w-]+\.(?:py|toml)", layout))
    existing = {p.name for p in files} | {"__init__.py"} | {p.name for p in (ROOT / "scripts").glob("*.py")} | \
        {p.name for p in (ROOT / "docs").glob("*.py")} | {p.name for p in (ROOT / "tests").glob("test_*.py")}
    assert named <= existing, f"docs/architecture.md's layout names files that do not exist: {sorted(named - existing)}"
