"""experiment.stage = "baseline": a classical calibration (coremax.baselines) fitted on the labelled train rows,
its hyperparameters chosen on the validation rows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from coremax.data.bulk import TARGETS
from coremax.data.dataset import element_only_message, has_spectra
from coremax.errors import UserError
from coremax.stages.base import Run, Stage, register
from coremax.stats.metrics import rmse


@register("baseline")
class BaselineStage(Stage):
    section = "baseline"
    distributed = False

    def _model(self):
        from coremax.baselines import make_baseline  # deferred: scikit-learn, only for baselines

        b = self.config["baseline"]
        return make_baseline(b["method"], b)  # each method takes the [baseline] keys it declares

    def check(self, data):
        model, method = self._model(), self.config["baseline"]["method"]
        if model.inputs == "spectra" and not has_spectra(data.info):
            raise UserError(element_only_message(self.config["data"]["dataset"], f"the {method} baseline on spectra"))
        if self.reads_settings() and not model.reads_settings:
            raise UserError(f"baseline.epo removes scanner directions from a baseline's features, which the {method} "
                            "calibration's log-ratios have none of; set baseline.epo = false.")

    def reads_settings(self):
        return self.config["baseline"]["epo"]

    def run(self, run: Run) -> None:
        """Fit on the labelled train rows; hyperparameters chosen on val rows (and, with the scanner settings'
        spectra, whether it is blind to them: baseline.epo)."""
        from coremax.baselines import BASELINE_FILE  # deferred: as above

        data, log, model = run.data, run.log, self._model()

        def inputs(part):  # the counts or the element table of a split, whichever the method reads
            return model.inputs_of(part.frame, np.asarray(part.x, dtype=np.float32) if model.inputs == "spectra"
                                   else None)
        x_tr, x_va = inputs(data.train), inputs(data.val)
        y_tr = data.train.frame[data.targets].to_numpy(np.float64)
        y_va = data.val.frame[data.targets].to_numpy(np.float64)
        x_un = None if data.unlabelled is None else inputs(data.unlabelled)
        log.info("baseline_fit", method=self.config["baseline"]["method"], inputs=model.inputs, rows=len(x_tr),
                 val_rows=len(x_va), unlabelled_rows=0 if x_un is None else len(x_un))
        settings = None if run.spectra is None else (inputs(run.spectra), run.spectra.frame["scanner"].to_numpy(str))
        model.fit(x_tr, y_tr, x_va, y_va, data.targets, x_un, data.new_core_rows(), settings,
                  contents=data.info.get("contents", list(TARGETS)))
        model.save(run.exp.checkpoints / BASELINE_FILE)
        pred = model.predict(x_va)
        row = {"epoch": 1, **{f"val_rmse_{t}": rmse(y_va[:, j], pred[:, j]) for j, t in enumerate(data.targets)}}
        run.exp.write_result("history", pd.DataFrame([row]))
        log.info("baseline_done", selected=model.selected_params(), **row)
