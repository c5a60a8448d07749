"""The embedded data sets, built when preprocess gets no --raw: the synthetic archives under
`<data-root>/datasets/external/<name>/`, generated on first use."""

from __future__ import annotations

import sys
from pathlib import Path

from coremax.errors import UserError

SYNTHETIC = Path("datasets") / "external" / "synthetic"
# The embedded data sets built when preprocess gets no --raw: the labelled archive (seed 0, 12 cores), the
# unlabelled pool pretraining reads beside it (another seed, every head), and both as the two-voltage benchmark.
EMBEDDED = {"synthetic": {}, "synthetic-pool": {"seed": 1, "cores": 52, "labelled": False},
            "synthetic-2kv": {"benchmark": "synthetic-2kv"},
            "synthetic-2kv-pool": {"seed": 1, "cores": 52, "labelled": False, "benchmark": "synthetic-2kv"}}


def default_kv(name: str):
    """The runs an embedded data set holds (its benchmark's voltages, e.g. "10,30"); else the 10 kV run."""
    from coremax.data.simulate import BENCHMARKS  # deferred: the simulator, only for its benchmarks' voltages

    bench = EMBEDDED.get(name, {}).get("benchmark")
    return ",".join(f"{k:g}" for k in BENCHMARKS[bench]["kvs"]) if bench else 10.0


def default_synthetic(data_root, name: str = "synthetic", **simulator) -> Path:
    """An embedded archive (`name` in EMBEDDED): generate the synthetic raw archive under the data root if it
    is not there (`simulator` overrides simulate_archive's settings, e.g. a small archive in tests)."""
    from coremax.data.simulate import simulate_archive  # deferred: the physics (xraylib, scipy), only to generate

    if name not in EMBEDDED:
        raise UserError(f"Without --raw the data set name must be one of the embedded ones ({', '.join(EMBEDDED)}); "
                        f"got {name!r}. Pass --raw for your own spectra.")
    simulator = {**EMBEDDED[name], **simulator}
    source = Path(data_root) / SYNTHETIC.parent / name
    if not (source / "manifest.toml").is_file():
        if source.exists():
            raise UserError(f"The folder {source} exists but has no manifest.toml, so it is not a complete synthetic "
                            "archive; remove it (or pass --raw) and run again.")
        print(f"generating the synthetic XRF archive in {source} ...", file=sys.stderr)
        simulate_archive(source, **simulator)
    return source
