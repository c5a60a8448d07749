"""The interface every classical baseline shares: fit on train rows, choose hyperparameters on validation rows.

Each target gets its own model, fitted on the train rows where that target is measured. The grid point
with the lowest RMSE on the measured validation rows wins; that model (fitted on train rows only) is kept,
so test rows never influence anything and the validation rows stay free of training for calibration.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from coremax.config import register_choices, section_values, with_defaults
from coremax.config.schema import SECTIONS
from coremax.data.ratios import area_matrix, area_parts, element_table
from coremax.errors import UserError
from coremax.registry import registrar
from coremax.stats.epo import blind, setting_directions, versions
from coremax.stats.metrics import rmse
from coremax.stats.weighting import choose_share
from coremax.io import atomic_path
from coremax.paths import inside


BASELINE_FILE = "baseline.skops"
INPUTS = ("spectra", "elements")  # what a baseline's fit/predict/feature_space take: counts, or the element table


def _plain(v):
    """numpy scalars -> python types so selected_params() logs and serialises cleanly."""
    return v.item() if isinstance(v, np.generic) else v


METHODS: dict[str, type] = {}  # baseline.method -> class: filled by @register in each module of this package
register_choices("baseline.method", METHODS)


def method_values(method: str, section: dict | None = None) -> dict:
    """The [baseline] keys a method reads: the shared ones, then its own [baseline.<method>] sub-section's, from
    `section` (a resolved [baseline], or part of one) and else at the schema's defaults."""
    values = section_values("baseline", section or {})
    shared = {k: v for k, v in values.items() if f"baseline.{k}" not in SECTIONS}
    return {**shared, **values.get(method, {})}


def register(method: str):
    """Class decorator: make a Baseline subclass a `baseline.method` (config choice, stage, study method, and a
    type its saved files may hold). Its constructor's config keys, when not given, are the schema's defaults."""
    def add(cls):
        cls.__init__ = with_defaults(cls.__init__, lambda: method_values(method))
        return registrar(METHODS, "method")(method)(cls)
    return add


class Baseline:
    """Common fit/predict/save logic; subclasses supply the features and the per-target grid.
    `config_keys`: the config keys the constructor takes, without defaults (the schema's fill them): its own
    [baseline.<method>] keys (nmf_svr: n_components) and the shared [baseline] ones it reads (features)."""

    method = ""
    config_keys: tuple[str, ...] = ()
    inputs = "spectra"  # or "elements": fit/predict/feature_space then take the element table (a DataFrame)
    reads_settings = True  # whether baseline.epo applies: a model blind to the scanner settings' directions

    def __init__(self):
        self.targets: list[str] = []
        self.models: list = []
        self.selected: dict[str, dict] = {}
        self.blind: list = []           # per target: the scanner directions its model does not see (None: plain)
        self.n_channels = 0             # width of the spectra seen by fit, checked again by predict

    # -- to be supplied by subclasses --------------------------------------------------------------------
    def _fit_features(self, x: np.ndarray, unlabelled: np.ndarray | None = None) -> np.ndarray:
        """Fit the feature transform on train spectra (and unlabelled ones: data.test_spectra) and return the
        train spectra's features."""
        raise NotImplementedError

    def _features(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _grid(self, n_train: int, n_features: int) -> list[dict]:
        raise NotImplementedError

    def _fit_one(self, f: np.ndarray, y: np.ndarray, params: dict, w: np.ndarray | None = None):
        """A fitted model for one target, its rows weighed by `w` (None = equally); must have
        `.predict(features) -> (n,)`."""
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------------------------
    def inputs_of(self, frame, counts):
        """What this baseline's fit, predict and feature_space take for these rows: `counts` (the spectra array)
        for a spectra baseline, the element columns of `frame` (the data set's rows, same order) for an element
        baseline; a UserError when such a baseline meets a data set without an element table."""
        return element_table(frame, f"the {self.method} baseline") if self.inputs == "elements" else counts

    def _cut(self, x) -> np.ndarray:
        """The spectra as floats, their width checked against the width seen at fit (the energy window
        data.channels is cut before a baseline sees the spectra); for an element baseline the `_area` columns of
        the parts seen at fit."""
        if self.inputs == "elements":  # an empty cell of a lab-imported table: nothing measured, read as 0 counts
            return np.nan_to_num(area_matrix(x, self.parts, f"the {self.method} baseline"), nan=0.0)
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2:
            raise UserError(f"The {self.method} baseline expects spectra as a 2-D array (rows, channels), "
                            f"got shape {x.shape}; pass one spectrum per row.")
        if self.n_channels and x.shape[1] != self.n_channels:
            raise UserError(f"The {self.method} baseline needs {self.n_channels} channels per spectrum but got "
                            f"{x.shape[1]}; use spectra like those it was fitted on (the same data.channels).")
        return x

    def fit(self, X_train, Y_train, X_val, Y_val, targets, X_unlabelled=None, new_rows=None,
            settings=None, contents=None) -> "Baseline":
        """`new_rows` (bool, train rows): the lab samples of new cores (data.test_labels); how much they weigh in
        the regression is chosen per target by `stats.weighting`'s rule (the features are fitted on every row
        alike). `settings` = (spectra, their scanner settings): the model blind to the directions along which the
        settings' mean features differ is a candidate too (baseline.epo: `stats.epo`). `contents`: the targets
        that are contents in wt% (the log-ratio baselines need them; the others take no notice). X are what
        `inputs_of` gives: spectra, or element tables (then `settings[0]` is one too)."""
        self.targets = [str(t) for t in targets]
        Y_train = np.asarray(Y_train, dtype=np.float64).reshape(len(X_train), -1)
        Y_val = np.asarray(Y_val, dtype=np.float64).reshape(len(X_val), -1)
        if Y_train.shape[1] != len(self.targets) or Y_val.shape[1] != len(self.targets):
            raise ValueError(f"Y has {Y_train.shape[1]}/{Y_val.shape[1]} columns for {len(self.targets)} targets")
        self.n_channels = 0
        if self.inputs == "elements":
            self.parts = area_parts(X_train, f"the {self.method} baseline")  # asked of every later table
        x_tr = self._cut(X_train)
        self.n_channels = x_tr.shape[1]
        unlabelled = None if X_unlabelled is None else self._cut(X_unlabelled)
        f_tr, f_va = self._fit_features(x_tr, unlabelled), self._features(self._cut(X_val))
        new = np.zeros(len(x_tr), bool) if new_rows is None else np.asarray(new_rows, bool)
        directions = None if settings is None else \
            setting_directions(self._features(self._cut(settings[0])), np.asarray(settings[1], dtype=str))
        offered = versions(directions)
        self.models, self.selected, self.blind = [], {}, []
        for j, t in enumerate(self.targets):
            tr, va = ~np.isnan(Y_train[:, j]), ~np.isnan(Y_val[:, j])
            if tr.sum() < 3 or va.sum() < 1:
                raise UserError(f"The target {t!r} has {int(tr.sum())} measured train rows and {int(va.sum())} "
                                "measured validation rows; the baseline needs at least 3 and 1, so add "
                                "labelled cores to the data set.")
            f, y = f_tr[tr], Y_train[tr, j]

            # One candidate per row weighting (stats.weighting says why) and features, plain or blind
            def fit_with(w, f=f, y=y, f_va=f_va[va], y_va=Y_val[va, j]):
                found = [(*self._choose(blind(f, d), y, blind(f_va, d), y_va, w), d) for d in offered]
                return found, np.array([c[0] ** 2 for c in found]), \
                    lambda i: [self._predict_without(blind(f, d), y, params, w, i) for _, params, _, d in found]
            (score, params, model, d), share, loo = choose_share(new[tr], y, fit_with)
            self.models.append(model)
            self.blind.append(d)
            self.selected[t] = {**{k: _plain(v) for k, v in params.items()}, "val_rmse": score,
                                **({"epo": d is not None} if len(offered) > 1 else {})}
            if share is not None:
                self.selected[t].update(new_core_share=share, new_core_loo_rmse=loo)
        return self

    def _choose(self, f, y, f_va, y_va, w) -> tuple[float, dict, object]:
        """(validation RMSE, hyperparameters, model) of the grid point with the lowest validation RMSE."""
        best = None
        for params in self._grid(len(y), f.shape[1]):
            model = self._fit_one(f, y, params, w)
            score = rmse(y_va, np.ravel(model.predict(f_va)))
            if best is None or score < best[0]:
                best = (score, params, model)
        return best

    def _predict_without(self, f, y, params, w, i: int) -> float:
        """Row i predicted by a model fitted without it (same hyperparameters): leave-one-out over new rows."""
        keep = np.arange(len(y)) != i
        model = self._fit_one(f[keep], y[keep], params, None if w is None else w[keep])
        return float(np.ravel(model.predict(f[i:i + 1]))[0])

    def predict(self, X) -> np.ndarray:
        if not self.models:
            raise UserError(f"The {self.method} baseline has not been fitted; run the baseline stage first.")
        f = self._features(self._cut(X))
        sees = getattr(self, "blind", None) or [None] * len(self.models)  # files saved before baseline.epo: plain
        return np.column_stack([np.ravel(m.predict(blind(f, d))) for m, d in zip(self.models, sees)]) \
            .reshape(len(f), len(self.models))

    def feature_space(self, X) -> np.ndarray:
        """The baseline's own description of spectra (sample suggestion measures distances in it)."""
        return self._features(self._cut(X))

    def selected_params(self) -> dict:
        """Per target: the hyperparameters the validation rows chose and their validation RMSE."""
        return {t: dict(p) for t, p in self.selected.items()}

    def save(self, path) -> Path:
        """skops format: loading it rebuilds scikit-learn objects and these classes, and runs no code."""
        import skops.io  # here, not at the top: importing skops walks all of scikit-learn (about 0.7 s a process)
        with atomic_path(path) as tmp:
            skops.io.dump(self, tmp)
        return Path(path)

    @classmethod
    def load(cls, root, path) -> "Baseline":
        """Load a saved baseline, refusing any type but scikit-learn's safe ones and this module's own."""
        path = inside(root, path, "baseline file")
        if not path.is_file():
            old = path.with_suffix(".pkl")
            hint = (f"; {old.name} is the old pickle format, which can run code when read: refit the baseline with "
                    "scripts/train.py --stage baseline") if old.is_file() else "; run the baseline stage first"
            raise UserError(f"The baseline file {str(path)!r} does not exist{hint}.")
        return cls.from_bytes(path.read_bytes(), f"The baseline file {str(path)!r}")

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> "Baseline":
        """A baseline of a skops file's bytes (`where` names them in a refusal), with the trusted types only."""
        import skops.io  # see save()
        try:
            trusted = trusted_types()
            content = _renamed_types(data)
            foreign = sorted(set(skops.io.get_untrusted_types(data=content)) - set(trusted))
            if foreign:
                raise UserError(f"{where} holds the type {foreign[0]!r}, which CoreMAX never writes; it is refused "
                                "(it could run code).")
            obj = skops.io.loads(content, trusted=trusted)
        except UserError:
            raise
        except Exception as e:  # damaged or foreign files all end here
            raise UserError(f"{where} cannot be read ({type(e).__name__}); refit the baseline with "
                            "scripts/train.py --stage baseline.") from None
        if not isinstance(obj, cls):
            raise UserError(f"{where} does not hold a {cls.__name__} baseline; check the path.")
        return obj


def features_inputs(method: str, features: str) -> str:
    """`baseline.features` of a spectra baseline that can also read the element table -> its `inputs`."""
    if features not in INPUTS:
        raise UserError(f"baseline.features = {features!r} is not one of {', '.join(INPUTS)}; pick one of those "
                        f"for the {method} baseline.")
    return features


def trusted_types() -> list[str]:
    """The only types a baseline file may hold beyond scikit-learn's own (which skops trusts): the registered
    baselines and the helper below."""
    return [f"{c.__module__}.{c.__qualname__}" for c in (*METHODS.values(), TargetScaled)]


# Baseline files saved before the `coremax.baselines` package name their types in `coremax.eval.baselines`.
OLD_TYPES = {("coremax.eval.baselines", "NmfSvr"): ("coremax.baselines.nmf_svr", "NmfSvr"),
             ("coremax.eval.baselines", "Pls"): ("coremax.baselines.pls", "Pls"),
             ("coremax.eval.baselines", "_TargetScaled"): ("coremax.baselines.base", "TargetScaled")}


def _renamed_types(content: bytes) -> bytes:
    """A skops file's bytes with the old type names of OLD_TYPES read as today's (its schema.json rewritten in
    memory; the file itself is not touched)."""
    if b"coremax.eval.baselines" not in content:
        return content
    import io
    import json
    import zipfile

    def rename(node):
        if isinstance(node, dict):
            new = OLD_TYPES.get((node.get("__module__"), node.get("__class__")))
            if new is not None:
                node["__module__"], node["__class__"] = new
            for value in node.values():
                rename(value)
        elif isinstance(node, list):
            for value in node:
                rename(value)

    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(content)) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename == "schema.json":
                schema = json.loads(data)
                rename(schema)
                data = json.dumps(schema).encode()
            zout.writestr(item, data)
    return out.getvalue()


class TargetScaled:
    """A regressor fitted on standardised targets that predicts in the original units."""

    def __init__(self, model, y: np.ndarray, f: np.ndarray, w: np.ndarray | None = None):
        self.mean, self.scale = float(y.mean()), float(y.std()) or 1.0
        self.model = model.fit(f, (y - self.mean) / self.scale, sample_weight=w)

    def predict(self, f: np.ndarray) -> np.ndarray:
        return np.ravel(self.model.predict(f)) * self.scale + self.mean
