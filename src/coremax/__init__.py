"""CoreMAX: masked spectrum modelling of XRF core-scanner spectra.

The package's layers, lowest first (LAYERS): a module imports only modules of its own layer or of lower ones,
never one above it (tests/test_layers.py checks it from the imports; docs/architecture.md explains each layer).
"""

__version__ = "0.1.0"

LAYERS = (
    ("errors", "progress", "provenance", "registry"),       # what everything may raise, record, register
    ("paths", "io", "logs"),                                # names under the data root, atomic files, JSON logs
    ("stats", "config"),                                    # shared arithmetic; the config hierarchy and its schema
    ("data", "experiment", "checkpoint", "frozen", "archive", "plotting"),  # data sets, experiment folders
    ("models",),                                            # the vitx encoder, MSM, the regressor, PEFT weights
    ("engine", "baselines", "bench_elements"),              # training loop and inference; classical calibrations
    ("eval", "modes", "checks", "bundle"),                  # prediction path, tests, shift checks; modes; bundles
    ("stages", "suggest", "study_methods", "study_tables"),  # pretrain / finetune / baseline; sample suggestion
    ("bench", "bench_data", "bench_predict", "sweep", "analysis"),  # benchmarks, sweeps, notebook helpers
    ("study",),                                             # the label-budget study
    ("demo",),                                              # the whole chain
    ("cli",),                                               # every command line
)
