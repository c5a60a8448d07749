"""Every key of the experiment config, stated once: its default, type (the default's), range or words, and the
one-line meaning. default-config.toml and docs/reference/config.md are written from this table
(`python -m coremax.config.schema`), and the functions consuming a section take their missing keys from it."""

from __future__ import annotations

from coremax.config.schema.base import Key

HEADER = """\
# CoreMAX default configuration. Every tunable value lives here with a one-line comment.
# Written by `python -m coremax.config.schema` from src/coremax/config/schema/sections.py: edit the schema, not this.
# Precedence, lowest to highest: the schema's defaults < this file < the experiment file (--config)
# < command-line overrides (section.key=value). Unknown keys and wrong types are refused."""

EXPERIMENT = {
    "name": Key("", "folder under <data-root>/experiments/; empty = a unique timestamped name"),
    "seed": Key(0, "seeds Python, NumPy and torch; a CPU run with the same seed repeats exactly", range="[0, 2**32)"),
    "stage": Key("pretrain", "pretrain (MSM autoencoder) | finetune (regressor) | baseline (classical); --stage sets "
                 "it", registry="coremax.stages"),
}

DATA = {
    "dataset": Key("synthetic", "data set name under <data-root>/datasets/ (built by scripts/preprocess.py)"),
    "targets": Key(["CaCO3", "TOC"], "target columns the regressor predicts, one output each"),
    "transform": Key("instance_normalize", "instance_normalize (per spectrum) | clr (log1p minus its per-spectrum "
                     "mean) | sqrt (then per spectrum) | log (log1p counts) | normalize (per channel, train stats) | "
                     "none", registry="coremax.data.transforms"),
    "spectrum_length": Key(2048, "channels per spectrum in the data set (shorter spectra are zero-padded to it)",
                           range="[1, inf)"),
    "channels": Key([0, 2048], "energy window [first, end) fed to the model in every stage; its width must divide by "
                    "model.patch_size"),
    "run_channels": Key([], "data sets of several runs per spot (tube voltages): the window [first, end) of each "
                        "run, in ascending kV, e.g. [[0, 512], [0, 1536]]; empty: data.channels for every run"),
    "pool": Key([], "pretraining: more data sets (unlabelled pools) whose train/val rows join; finetune.epo and "
                "baseline.epo: their spectra join the scanner settings' means; never one holding a test core"),
    "max_labels": Key(0, "fine-tuning: keep a seeded random N labelled train rows (0 = all), for label-budget "
                      "studies", range="[0, inf)"),
    "augment": Key(False, "fine-tuning: Poisson-resample counts to a random fraction of the live time"),
    "augment_min_fraction": Key(0.5, "smallest live-time fraction drawn by the augmentation", range="(0, 1]"),
    "jitter_gain": Key(0.0, "both stages: relative sd of a random energy-gain stretch per spectrum (0 = off)",
                       range="[0, 0.1]"),
    "jitter_offset": Key(0.0, "both stages: sd in channels of a random energy-offset shift per spectrum (0 = off)",
                         range="[0, 20] channels"),
    "jitter_width": Key(0.0, "both stages: largest extra Gaussian peak broadening, sigma in channels (0 = off)",
                        range="[0, 20] channels"),
    "max_memory_gb": Key(4.0, "a split's spectra are held in RAM as float32 up to this size; larger ones stay in "
                         "their memory-mapped .npy shards and are streamed shard by shard (each DDP rank its own run "
                         "of shards)", range="(0, inf)"),
    "jitter_absorption": Key(0.0, "both stages: low-energy absorption change (water film, window) exp(-t (1.74 "
                             "keV/E)^3), t in +-this (0 = off)", range="[0, 5]"),
    "test_spectra": Key(False, "protocol new-cores-spectra: pretraining and baselines' unsupervised steps also read "
                        "the test cores' spectra, never their labels"),
    "test_labels": Key(0, "protocol new-cores-labels: k labelled rows of each test core (seeded) join the training "
                       "labels; the test metrics and the floor leave them out", range="[0, inf)"),
    "test_label_rows": Key("", "new-cores-labels: CSV (seed, k, source_file) under the data root naming those rows, "
                           'e.g. chosen by sample suggestion; "" = random depths'),
    "target_transform": Key("none", 'fine-tuning: "sqrt" fits the square roots of the contents (wt%, standardised) '
                            "and squares the predictions back; other targets and the baselines as they are",
                            choices=("none", "sqrt")),
}

MODEL = {
    "size": Key("tiny", "tiny (192/6/3) | small (384/12/6) | base (768/12/12) | large (1024/24/16): dim/depth/heads",
                registry="coremax.models"),
    "patch_size": Key(16, "channels per patch token (16 -> 128 tokens for 2048 channels)", range="[1, inf)"),
    "mask_ratio": Key(0.4, "pretraining: fraction of patches hidden from the encoder", range="[0, 1)"),
    "loss_on": Key("masked", "pretraining loss over masked patches only, or all", choices=("masked", "all")),
    "norm_pix_loss": Key(False, "pretraining: reconstruct each patch normalised by its own mean and std"),
    "global_pool": Key(True, "fine-tuning head on the mean of patch tokens (true) or on the class token (false)"),
    "head_layers": Key(1, "fine-tuning head on the mean patch tokens of the last N encoder blocks, concatenated (1 = "
                       "the final one)", range="[1, inf)"),
    "drop_path": Key(0.1, "stochastic depth rate of the last encoder block (linear from 0)", range="[0, 1)"),
    "latent": Key("plain", "pretraining: plain (MAE) | vsc (a spike-and-slab code of the mean visible token, "
                  "Tonolini et al. 2020, as an extra decoder token; its KL joins the loss)",
                  choices=("plain", "vsc")),
    "vsc_dim": Key(32, 'latent = "vsc": dimensions of the sparse code', range="[1, inf)"),
    "vsc_beta": Key(1e-5, 'latent = "vsc": weight of the spike-and-slab KL (nats per spectrum) beside the '
                    "masked-patch MSE; 1e-3 and 1e-4 switched every dimension off in the CPU recipe",
                    range="[0, inf)"),
    "vsc_alpha": Key(0.1, 'latent = "vsc": prior probability that a code dimension is active (the prior\'s sparsity)',
                     range="(0, 1)"),
    "run_tokens": Key("concatenated", "several runs per spot: concatenated (the windows as one spectrum, positions "
                      "running on, no run embedding; chosen on validation cores, docs/concepts/runs.md) | embedding "
                      "(each run's patches positioned in its own window, plus a learned run embedding); a one-run "
                      "model ignores it", registry="coremax.models"),
    "aux_elements": Key(0.0, "pretraining: weight of an auxiliary loss, the mean visible token predicting the "
                        "spectrum's standardised element log-ratios (MSM taught what the lab's ratios carry); 0 = "
                        "off", range="[0, inf)"),
}

OPTIM = {
    "batch_size": Key(64, "spectra per step per process", range="[1, inf)"),
    "epochs": Key(20, "passes over the training rows", range="[1, inf)"),
    "blr": Key(1.5e-4, 'base learning rate (the lr itself unless lr_scaling = "linear")', range="(0, inf)"),
    "lr_scaling": Key("none", "none: lr = blr | linear: lr = blr * effective batch / 256",
                      choices=("none", "linear")),
    "min_lr": Key(1e-6, "floor of the cosine schedule", range="[0, inf)"),
    "warmup_epochs": Key(2.0, "linear warm-up length, per iteration; at most a quarter of optim.epochs, so a short "
                         "run still ends its cosine", range="[0, inf)"),
    "weight_decay": Key(0.05, "AdamW weight decay (never on biases, norms, tokens, position embeddings)",
                        range="[0, inf)"),
    "clip_grad": Key(1.0, "max gradient norm; 0 disables clipping", range="[0, inf)"),
    "layer_decay": Key(0.75, "fine-tuning: lr multiplier per encoder layer down from the head (1 = off)",
                       range="(0, 1]"),
    "accum_iter": Key(1, "gradient accumulation steps per optimizer step", range="[1, inf)"),
}

RUNTIME = {
    "device": Key("auto", "auto (CUDA when present, else CPU) | cpu | cuda | cuda:N"),
    "threads": Key(0, "CPU threads for torch ops (0 = torch's choice)", range="[0, inf)"),
    "data_on_device": Key(True, "GPU: copy the spectra to the GPU once when they fit in a quarter of its free memory "
                          "(batches are then sliced there)"),
    "pin_mem": Key(False, "pin each batch in page-locked memory for faster host-to-GPU copies (GPU only)"),
    "amp": Key("auto", "auto (bf16 on GPUs and on CPUs with AVX-512 BF16 or AMX, fp16 + scaler on other GPUs, else "
               "off) | bf16 | fp16 | off", choices=("auto", "bf16", "fp16", "off")),
    "compile": Key(False, "wrap the model in torch.compile"),
    "save_every": Key(0, "also keep checkpoint-epoch-N.pth every N epochs (0 = never)", range="[0, inf)"),
    "tensorboard": Key(False, "also write each epoch's numbers (losses, val RMSE, lr, spectra/s, MFU) as TensorBoard "
                       "scalars to <experiment>/tensorboard/ (rank 0)"),
    "log_interval_s": Key(30.0, "seconds between progress log lines when stdout is not a terminal", range="[0, inf)"),
}

FINETUNE = {
    "from": Key("", "pretrain experiment name (its best-model.pth), a checkpoint path under the data root, or a model "
                "bundle file <name>.coremax (scripts/archive.py bundle of a pretrain or finetune experiment; its path "
                "as given or relative to the working directory; checked on load; its model.size and "
                "model.patch_size replace this run's); empty = from scratch"),
    "mode": Key("full", "full (train everything) | linear_probe (frozen encoder, head by SGD) | ridge (frozen "
                "encoder, closed-form ridge head, strength chosen on val rows and any new-core samples left out) | "
                "lp_ft (ridge head, then full fine-tuning) | lora (frozen encoder + low-rank updates of its linear "
                "layers) | adapter (frozen encoder + a bottleneck after each block); lora and adapter checkpoints "
                "keep only the trained weights and name their base",
                registry="coremax.modes"),
    "lora_rank": Key(8, "lora: rank of the update B A of each linear layer (attention qkv and projection, both MLP "
                     "layers)", range="[1, inf)"),
    "lora_alpha": Key(16.0, "lora: the update is scaled by lora_alpha / lora_rank", range="(0, inf)"),
    "adapter_dim": Key(32, "adapter: bottleneck width of the adapter after each encoder block", range="[1, inf)"),
    "epo": Key(False, "ridge, lp_ft: also offer the ridge head blind to the scanner (the directions along which the "
               "settings' mean embeddings differ removed: external parameter orthogonalisation), chosen per target "
               "on the val rows; the means come from unlabelled spectra of each setting (stats.epo.EPO_SPECTRA of "
               "them) of the data set, data.pool and, with data.test_spectra, the test cores"),
    "epo_penalty": Key(0.0, "lp_ft with epo: weight of the spread of the scanner settings' mean changes of "
                       "prediction from the blind head's (unlabelled spectra of each setting, drawn anew every step) "
                       "added to the loss for the targets whose ridge head was chosen blind, so fine-tuning keeps "
                       "them blind", range="[0, inf)"),
    "elements": Key(False, "ridge: the head also reads the element table's centred log-ratios (the lab's "
                    "intensities; MSM features and ratios in one closed-form head), their weight beside the "
                    "embedding chosen per target on the val rows"),
}

BASELINE = {
    "method": Key("nmf_svr", "nmf_svr (Lee et al. 2022) | pls (partial least squares on log counts) | ratio (a + b "
                  "ln(E1/E2), the papers' line) | mlc (multivariate log-ratio calibration, Weltje et al. 2015) | "
                  "lrce (log-ratio calibration equation of element contents, Weltje & Tjallingii 2008); ratio, mlc "
                  "and lrce read the element table; a method's own keys are in [baseline.<method>]",
                  registry="coremax.baselines"),
    "features": Key("spectra", "nmf_svr, pls: spectra (counts per channel) | elements (the element table's net peak "
                    "areas)", choices=("spectra", "elements")),
    "epo": Key(False, "nmf_svr, pls: also offer each target's model blind to the scanner, as finetune.epo does for "
               "the ridge head (in the baseline's own features), chosen per target on the val rows"),
}

# Each method's own keys, a sub-section of [baseline] (baseline.<method>.<key>); a method without any has none.
BASELINE_NMF_SVR = {
    "n_components": Key(10, "NMF components", range="[1, inf)"),
}

BASELINE_RATIO = {
    "pair": Key("", 'the log-ratio, e.g. "Ca/Ti"; empty = every pair of parts tried, the lowest val RMSE per target '
                "wins"),
    "terms": Key(1, "log-ratio terms, 1 or 2 (the second pair chosen on the val rows given the first)",
                 range="{1, 2}"),
}

BASELINE_MLC = {
    "cv_folds": Key(5, "folds of the cross-validation on the train rows that sizes its prediction intervals",
                    range="[2, inf)"),
}

BASELINE_LRCE = {
    "reference": Key("", 'the reference element, e.g. "Ti"; empty = chosen on the val rows among the element targets'),
}

EVAL = {
    "interval": Key(0.9, "nominal coverage of the split-conformal prediction intervals", range="(0, 1)"),
}


# Section name -> its keys, in the order the default file and the reference list them.
SECTIONS: dict[str, dict[str, Key]] = {
    "experiment": EXPERIMENT, "data": DATA, "model": MODEL, "optim": OPTIM, "runtime": RUNTIME, "finetune": FINETUNE,
    "baseline": BASELINE, "baseline.nmf_svr": BASELINE_NMF_SVR, "baseline.ratio": BASELINE_RATIO,
    "baseline.mlc": BASELINE_MLC, "baseline.lrce": BASELINE_LRCE, "eval": EVAL,
}

# Keys renamed or moved, old name -> new: a frozen config of an older experiment is read with the new name (a note
# says so); anywhere else the old name is refused with the new one.
RENAMED = {"runtime.num_workers": "runtime.threads",
           "baseline.n_components": "baseline.nmf_svr.n_components", "baseline.pair": "baseline.ratio.pair",
           "baseline.terms": "baseline.ratio.terms", "baseline.cv_folds": "baseline.mlc.cv_folds",
           "baseline.reference": "baseline.lrce.reference"}
