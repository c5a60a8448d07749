"""What a label-budget study (coremax.study) is made of: its protocols, the ways new-cores-labels picks the test
cores' lab samples, and its methods: the neural ones (a fine-tuning mode, from the pretraining or not) and every
registered baseline, each with the overrides that make it."""

from __future__ import annotations

from coremax import suggest
from coremax.baselines import METHODS as BASELINES
from coremax.modes import MODES

# protocol: (sweep name suffix, reads the test cores' spectra, k test labels per core)
PROTOCOLS = {"new-cores": ("", False, False), "new-cores-spectra": ("-spectra", True, False),
             "new-cores-labels": ("-labels", True, True)}
SELECTIONS = ("random", *suggest.METHODS)  # how new-cores-labels picks the k lab samples of each test core

# The study's neural methods: (finetune.mode, starts from the pretraining); every registered baseline
# (coremax.baselines) is a method too, under its baseline.method. A new method is one line here.
NEURAL = {"msm": ("full", True), "msm-probe": ("ridge", True), "msm-lpft": ("lp_ft", True),
          "msm-lora": ("lora", True), "msm-adapter": ("adapter", True), "scratch": ("full", False)}


def neural_methods() -> dict[str, tuple[str, bool, dict]]:
    """The study's neural methods as (finetune.mode, starts from the pretraining, overrides): NEURAL, and
    `<method>-elements` for the closed-form heads, which may also read the element log-ratios (finetune.elements:
    the hybrid of MSM features and the lab's ratios)."""
    out = {m: (mode, pretrained, {}) for m, (mode, pretrained) in NEURAL.items()}
    out.update({f"{m}-elements": (mode, pretrained, {"finetune.elements": True})
                for m, (mode, pretrained) in NEURAL.items() if "elements" in MODES[mode].options})
    return out


def baseline_methods() -> dict[str, dict]:
    """The study methods of the classical baselines and their overrides: each under its baseline.method, and
    `<method>-elements` for those that can also read the element table (baseline.features)."""
    out = {m: {"baseline.method": m} for m in BASELINES}
    out.update({f"{m}-elements": {"baseline.method": m, "baseline.features": "elements"}
                for m, cls in BASELINES.items() if "features" in cls.config_keys})
    return out


def methods() -> tuple[str, ...]:
    """Every study method, in table order: the neural ones, then the baselines."""
    return (*neural_methods(), *baseline_methods())
