"""Classical baselines (`--stage baseline`, `baseline.method`). A baseline is one class in its own module of this
package, decorated with `@register("<method>")`: every module here is imported below, so the config's choices,
the stage, the study and the loader's allow-list all know it without another line. A baseline reads the spectra
(counts per channel) or, with `inputs = "elements"`, the data set's element table (`Baseline.inputs_of` gives
either): nmf_svr and pls read either (baseline.features); ratio, mlc and lrce, the scanner labs' log-ratio
calibrations (logratio.py), read the element table.
"""

from __future__ import annotations

import importlib
import pkgutil

from coremax.baselines.base import BASELINE_FILE, METHODS, Baseline, method_values, register, trusted_types
from coremax.errors import UserError

__all__ = ["BASELINE_FILE", "METHODS", "Baseline", "register", "trusted_types", "make_baseline", "load_baseline"]

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")  # each registers its class
# the spectra baselines first, then those that read the element table: the order of study tables and messages
for _method in [m for m, c in METHODS.items() if c.inputs != "spectra"]:
    METHODS[_method] = METHODS.pop(_method)


def make_baseline(method: str, section: dict | None = None) -> Baseline:
    """A fresh baseline by config name (`baseline.method`), built from the keys it takes of the [baseline]
    section (`section`: the whole section, its sub-sections inside; what it lacks is at the schema's defaults)."""
    if method not in METHODS:
        raise UserError(f"The baseline.method {method!r} is not known; use one of {', '.join(METHODS)}.")
    cls, values = METHODS[method], method_values(method, section)
    return cls(**{k: values[k] for k in cls.config_keys})


def load_baseline(root, path) -> Baseline:
    """A baseline saved by `Baseline.save`, of any method; only from under the data root."""
    return Baseline.load(root, path)
