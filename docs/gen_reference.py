"""Write docs/reference/scripts.md: every script's --help (and archive.py's subcommands'), as the scripts print it.

    python docs/gen_reference.py            # rewrite the page
    python docs/gen_reference.py --check    # exit 1 when the committed page differs (tests/test_docs.py does this)

Each script runs as `python scripts/<name>.py --help` would run it (runpy, in this process), with a fixed width
of 100 columns so the page does not depend on the terminal.
"""

from __future__ import annotations

import contextlib
import io
import os
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "reference" / "scripts.md"
# The researcher's commands first, then the rest; a script not listed here is appended in name order.
ORDER = ["preprocess", "train", "test", "predict", "suggest", "archive", "simulate", "sweep", "label_budget", "demo",
         "bench_train", "bench_data"]
SUBCOMMANDS = {"archive": ["pack", "check", "trust", "unpack"]}
WIDTH = "100"

HEAD = """# Scripts

Every command-line entry point, with its `--help` as the script prints it. Each `scripts/<name>.py` only calls
`coremax.cli.<name>_main` (`scripts/test.py`: `evaluate_main`); run them from the repository root inside the
virtual environment. Overrides `section.key=value` of `train.py`, `sweep.py` and `label_budget.py` take TOML
values; every key is in [the configuration reference](config.md).

This page is generated: `python docs/gen_reference.py` rewrites it, and `tests/test_docs.py` fails when it
differs from what the scripts print.
"""


def help_text(script: Path, *args: str) -> str:
    """What `python scripts/<name>.py [args] --help` prints."""
    out = io.StringIO()
    argv, columns = sys.argv, os.environ.get("COLUMNS")
    sys.argv = [f"{script.name}", *args, "--help"]
    os.environ["COLUMNS"] = WIDTH
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv
        if columns is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = columns
    return out.getvalue().rstrip() + "\n"


def page() -> str:
    scripts = {p.stem: p for p in (ROOT / "scripts").glob("*.py")}
    names = [n for n in ORDER if n in scripts] + sorted(set(scripts) - set(ORDER))
    parts = [HEAD]
    for name in names:
        parts.append(f"## `scripts/{name}.py`\n\n```text\n{help_text(scripts[name])}```\n")
        for sub in SUBCOMMANDS.get(name, []):
            parts.append(f"### `scripts/{name}.py {sub}`\n\n```text\n{help_text(scripts[name], sub)}```\n")
    return "\n".join(parts)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = page()
    if "--check" in argv:
        same = PAGE.is_file() and PAGE.read_text() == text
        print(f"{PAGE.relative_to(ROOT)} is {'up to date' if same else 'stale: run python docs/gen_reference.py'}")
        return 0 if same else 1
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(text)
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
