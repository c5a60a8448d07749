"""The range of every numeric config key: the one truth, read by the config check and by the constructors."""

from __future__ import annotations

import math

# Numeric keys and the range they must lie in: checked with the choices, before any folder exists. The one truth
# of each bound: constructors that take such a value check it with `in_range`.
RANGES = {
    "experiment.seed": ("0 <= x < 2**32", lambda x: 0 <= x < 2**32),  # what NumPy and torch seeding both take
    "data.max_memory_gb": ("x > 0", lambda x: x > 0),
    "data.spectrum_length": ("x >= 1", lambda x: x >= 1),
    "data.max_labels": ("x >= 0", lambda x: x >= 0),
    "data.test_labels": ("x >= 0", lambda x: x >= 0),
    "data.augment_min_fraction": ("0 < x <= 1", lambda x: 0 < x <= 1),
    "data.jitter_gain": ("0 <= x <= 0.1", lambda x: 0 <= x <= 0.1),
    "data.jitter_offset": ("0 <= x <= 20 channels", lambda x: 0 <= x <= 20),
    "data.jitter_width": ("0 <= x <= 20 channels", lambda x: 0 <= x <= 20),
    "data.jitter_absorption": ("0 <= x <= 5", lambda x: 0 <= x <= 5),
    "model.patch_size": ("x >= 1", lambda x: x >= 1),
    "model.head_layers": ("x >= 1", lambda x: x >= 1),
    "model.mask_ratio": ("0 <= x < 1", lambda x: 0 <= x < 1),  # 0: a plain autoencoder, loss on all patches
    "model.drop_path": ("0 <= x < 1", lambda x: 0 <= x < 1),
    "model.vsc_dim": ("x >= 1", lambda x: x >= 1),
    "model.vsc_beta": ("x >= 0", lambda x: x >= 0),  # 0: the code is free, an autoencoder bottleneck beside the tokens
    "model.vsc_alpha": ("0 < x < 1", lambda x: 0 < x < 1),  # the KL takes log(alpha) and log(1 - alpha)
    "model.aux_elements": ("x >= 0", lambda x: x >= 0),
    "optim.batch_size": ("x >= 1", lambda x: x >= 1),
    "optim.epochs": ("x >= 1", lambda x: x >= 1),
    "optim.blr": ("x > 0", lambda x: x > 0),
    "optim.min_lr": ("x >= 0", lambda x: x >= 0),
    "optim.warmup_epochs": ("x >= 0", lambda x: x >= 0),
    "optim.weight_decay": ("x >= 0", lambda x: x >= 0),
    "optim.clip_grad": ("x >= 0", lambda x: x >= 0),
    "optim.layer_decay": ("0 < x <= 1", lambda x: 0 < x <= 1),
    "optim.accum_iter": ("x >= 1", lambda x: x >= 1),
    "runtime.threads": ("x >= 0", lambda x: x >= 0),
    "runtime.save_every": ("x >= 0", lambda x: x >= 0),
    "runtime.log_interval_s": ("x >= 0", lambda x: x >= 0),
    "finetune.lora_rank": ("x >= 1", lambda x: x >= 1),
    "finetune.lora_alpha": ("x > 0", lambda x: x > 0),
    "finetune.adapter_dim": ("x >= 1", lambda x: x >= 1),
    "finetune.epo_penalty": ("x >= 0", lambda x: x >= 0),
    "baseline.n_components": ("x >= 1", lambda x: x >= 1),
    "baseline.terms": ("x = 1 or 2", lambda x: x in (1, 2)),  # ratio: one or two log-ratio terms
    "baseline.cv_folds": ("x >= 2", lambda x: x >= 2),  # mlc: K-fold needs two folds
    "eval.interval": ("0 < x < 1", lambda x: 0 < x < 1),
}


def in_range(full: str, value) -> bool:
    """Whether `value` lies in the range of config key `full` (RANGES)."""
    rule, ok = RANGES[full]
    return math.isfinite(value) and ok(value)
