"""A prepared data set as tensors (in memory, or memory-mapped shards streamed shard by shard when larger than
data.max_memory_gb); batches are index slices, never per-sample file reads."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import torch

from coremax.config import consumes
from coremax.data.bulk import TARGETS
from coremax.data.dataset import element_only_message, has_spectra, load_arrays, load_info
from coremax.data.shards import Shards
from coremax.data.transforms import TargetScaler, make_transform, needs_statistics
from coremax.data.window import Window, data_window
from coremax.engine.labels import check_targets, chosen_test_rows, core_label_mask, labelled_rows
from coremax.errors import UserError


@dataclass
class ArrayData:
    x: torch.Tensor | Shards   # (n, L) raw counts: float32 in memory, or int32 shards streamed from disk
    y: torch.Tensor | None     # (n, T) normalised targets; NaN = not measured
    frame: pd.DataFrame        # metadata (and raw targets) aligned with x

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def streamed(self) -> bool:
        return isinstance(self.x, Shards)

    def get(self, idx: torch.Tensor) -> torch.Tensor:
        """The rows `idx` as float32 counts (read from the memory-mapped shards when streamed)."""
        if not self.streamed:
            return self.x[idx]
        return torch.from_numpy(self.x.take(idx).astype(np.float32))

    def _shuffled(self, generator: torch.Generator) -> torch.Tensor:
        """A random order; streamed, shard by shard (shards in random order, rows shuffled within each), so
        that the reads of an epoch sweep each shard once instead of jumping across the whole set."""
        if not self.streamed:
            return torch.randperm(len(self), generator=generator)
        sizes = self.x.shard_sizes
        starts = np.cumsum([0] + sizes[:-1])
        return torch.cat([starts[s] + torch.randperm(sizes[s], generator=generator)
                          for s in torch.randperm(len(sizes), generator=generator).tolist()])

    def batches(self, batch_size: int, generator: torch.Generator | None = None, rank: int = 0,
                world: int = 1) -> Iterator[torch.Tensor]:
        """Index batches of this process's share. Shuffled when a generator is given; every process gets
        the same number of rows (the permutation wraps) so distributed steps stay in lockstep. Streamed, each
        process takes its own contiguous run of the shard-by-shard order, so each reads its own shards."""
        n = len(self)
        order = self._shuffled(generator) if generator is not None else torch.arange(n)
        if world > 1:
            total = math.ceil(n / world) * world
            order = torch.cat([order, order[: total - n]])
            order = order.view(world, -1)[rank] if self.streamed else order[rank::world]
        if not self.streamed:
            order = order.to(self.x.device)  # rows on the GPU are sliced there, with no copy per step
        for start in range(0, len(order), batch_size):
            yield order[start:start + batch_size]

    def to(self, device: torch.device) -> "ArrayData":
        return ArrayData(self.x.to(device), self.y.to(device) if self.y is not None else None, self.frame)

    @property
    def nbytes(self) -> int:
        """Bytes of the float32 spectra and targets in memory (what a streamed set would take if loaded)."""
        return 4 * len(self) * self.x.shape[1] + (4 * self.y.nelement() if self.y is not None else 0)

    def num_batches(self, batch_size: int, world: int = 1) -> int:
        return math.ceil(math.ceil(len(self) / world) / batch_size)


@dataclass
class Prepared:
    train: ArrayData
    val: ArrayData
    targets: list[str]
    scaler: TargetScaler | None
    transform_name: str
    channel_stats: tuple[torch.Tensor, torch.Tensor] | None
    augment: bool
    augment_min_fraction: float
    jitter: tuple[float, float, float]   # calibration jitter: gain, offset, peak width (0 = off)
    absorption: float                    # low-energy absorption jitter (0 = off)
    channels: Window                     # the energy window (of each run) the arrays hold
    info: dict
    unlabelled: ArrayData | None = None  # baselines: the test cores' spectra (no labels) with data.test_spectra

    def transform(self, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
        stats = [s.to(device) for s in self.channel_stats] if self.channel_stats else (None, None)
        return make_transform(self.transform_name, *stats, window=self.channels)

    def new_core_rows(self) -> np.ndarray:
        """Which training rows are of the test cores: their lab samples that joined training (data.test_labels)."""
        return self.train.frame["core"].isin(self.info.get("cores", {}).get("test", [])).to_numpy()


Rows = tuple  # (metadata and targets DataFrame, counts (rows, window) memory-mapped or in memory)


def read_rows(data_root, name: str, split: str, spectrum_length: int, channels: Window) -> Rows:
    """One split's metadata and the energy window of its counts (still memory-mapped: nothing copied yet)."""
    meta, x = load_arrays(data_root, name, split)
    if x.shape[1] != spectrum_length * channels.runs:
        runs = f" ({channels.runs} runs per spot)" if channels.runs > 1 else ""
        raise UserError(f"The data set {name!r} has {x.shape[1]} channels{runs} but data.spectrum_length = "
                        f"{spectrum_length}; set data.spectrum_length to match or re-run preprocess.")
    return meta, channels(x)


def to_arrays(rows: Rows, targets: list[str], scaler: TargetScaler | None, max_bytes: float = math.inf) -> ArrayData:
    """Rows as tensors: counts as float32 (the only copy of the spectra) when they take at most `max_bytes`,
    else left in their memory-mapped shards and streamed; targets normalised."""
    meta, x = rows
    if not (isinstance(x, Shards) and 4 * x.shape[0] * x.shape[1] > max_bytes):
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    y = None
    if scaler is not None:
        y = torch.from_numpy(np.asarray(scaler.transform(meta[targets].to_numpy(np.float64)), dtype=np.float32))
    return ArrayData(x, y, meta.reset_index(drop=True))


def unlabelled(rows: Rows, info: dict) -> Rows:
    """data.test_spectra: the test cores' spectra for unsupervised steps, every target column dropped here so
    that nothing downstream can read a test label."""
    meta, x = rows
    return meta.drop(columns=[c for c in info.get("targets", {}) if c in meta.columns]), x


def pool_rows(data_root, dataset: str, info: dict, pool, train: Rows, val: Rows, spectrum_length: int,
              channels) -> tuple[Rows, Rows]:
    """Pretraining rows: the labelled set's train/val rows plus those of every unlabelled pool data set. A pool
    holding any of the labelled set's test cores is refused, so no test core is ever seen in pretraining."""
    trains, vals = [train], [val]
    test_cores = set(info.get("test_cores", []))
    for name in pool:
        if name == dataset:
            raise UserError(f"data.pool names the data set itself ({name!r}); list only other data sets.")
        pool_info = load_info(data_root, name)
        shared = sorted(test_cores & {c for split in ("train", "val", "test")
                                      for c in pool_info.get("cores", {}).get(split, [])})
        if shared:
            raise UserError(f"The pool data set {name!r} holds {shared[0]!r}, a test core of {dataset!r}; "
                            "rebuild the pool without the test cores.")
        trains.append(read_rows(data_root, name, "train", spectrum_length, channels))
        vals.append(read_rows(data_root, name, "val", spectrum_length, channels))
    return (join_rows(trains), join_rows(vals)) if len(trains) > 1 else (train, val)


def join_rows(parts: list[Rows]) -> Rows:
    """Rows of several splits or data sets as one (metadata columns they all have)."""
    xs = [x for _, x in parts]
    # Shards join without reading anything; to_arrays decides whether they are loaded or streamed.
    x = Shards.concat(xs) if all(isinstance(a, Shards) for a in xs) else \
        np.concatenate([np.asarray(a, dtype=np.float32) for a in xs])
    return pd.concat([m for m, _ in parts], ignore_index=True, join="inner"), x


def setting_spectra(data_root, seed: int, data_config: dict, per_setting: int) -> ArrayData:
    """Unlabelled spectra for statistics per scanner setting (the `scanner` column; finetune.epo, baseline.epo):
    up to `per_setting` rows of each setting, drawn (seeded) from every spectrum the run may read without a label:
    the data set's train and validation cores, the data sets of data.pool and, with data.test_spectra, the test
    cores (every target column dropped)."""
    spectrum_length = data_config["spectrum_length"]
    dataset = data_config["dataset"]
    info = load_info(data_root, dataset)
    channels = data_window(data_config, info)
    parts = pool_rows(data_root, dataset, info, list(data_config["pool"]),
                      *(read_rows(data_root, dataset, s, spectrum_length, channels) for s in ("train", "val")),
                      spectrum_length, channels)
    if data_config["test_spectra"]:
        parts += (unlabelled(read_rows(data_root, dataset, "test", spectrum_length, channels), info),)
    meta, x = unlabelled(join_rows(list(parts)), info)  # statistics of spectra: no label is needed or kept
    settings = meta["scanner"].astype(str).to_numpy() if "scanner" in meta.columns else np.full(len(meta), "")
    rng = np.random.default_rng(seed)
    keep = np.sort(np.concatenate([rng.choice(idx, size=min(len(idx), per_setting), replace=False)
                                   for _, idx in sorted(pd.Series(settings).groupby(settings).indices.items())]
                                  or [np.zeros(0, int)]))
    meta = meta.iloc[keep].assign(scanner=settings[keep])
    return to_arrays((meta, x[keep]), [], None)


@consumes("data")  # the keys a caller leaves out come at the schema's defaults
def prepare_data(data_root, stage: str, seed: int, *, dataset: str, targets: list, transform: str,
                 spectrum_length: int, channels: list, run_channels: list, pool: list, max_labels: int, augment: bool,
                 augment_min_fraction: float, jitter_gain: float, jitter_offset: float, jitter_width: float,
                 jitter_absorption: float, max_memory_gb: float, test_spectra: bool, test_labels: int,
                 test_label_rows: str, target_transform: str) -> Prepared:
    """Consumes the [data] section. Pretraining keeps every train row (and the rows of the `pool` data sets)
    and needs no labels; fine-tuning and baselines keep train rows with at least one target, optionally a
    seeded random `max_labels` of them. Every stage sees only the energy window `channels`.
    The protocols that may read test cores: `test_spectra` adds their spectra, never their labels, to
    pretraining's rows and to a baseline's unsupervised feature fit; `test_labels` = k adds k labelled rows
    of each test core to the training labels (after the `max_labels` draw), which evaluation then leaves out;
    `test_label_rows` names a file that chose them (else they are random). `target_transform = "sqrt"`: the
    contents are standardised as square roots (TargetScaler; the checkpoint keeps which)."""
    targets = list(targets)
    info = load_info(data_root, dataset)
    if has_spectra(info):
        channels = data_window({"channels": channels, "spectrum_length": spectrum_length,
                                "run_channels": run_channels}, info)
    elif stage != "baseline":
        raise UserError(element_only_message(dataset, f"the {stage} stage"))
    else:  # a lab's element tables: no counts to window
        spectrum_length, channels = 0, Window(((0, 0),), 0)
    train, val = (read_rows(data_root, dataset, s, spectrum_length, channels) for s in ("train", "val"))
    scaler, spectra_only = None, None
    # the test split, read once, and only by the protocols that may read it
    test = read_rows(data_root, dataset, "test", spectrum_length, channels) if test_spectra or test_labels else None
    if stage == "pretrain":
        train, val = pool_rows(data_root, dataset, info, list(pool), train, val, spectrum_length, channels)
        if len(val[0]) == 0:
            raise UserError(f"The data set {dataset!r} (with data.pool) has no validation rows, so no epoch could be "
                            "judged; rebuild it with scripts/preprocess.py and a --split below 1.")
        if test_spectra:
            train = join_rows([train, unlabelled(test, info)])
    else:
        check_targets(targets, info, dataset)
        train, val = labelled_rows(train, targets), labelled_rows(val, targets)
        if len(train[0]) == 0:
            raise UserError(f"The data set {dataset!r} has no train rows with any of {targets}; "
                            "check the bulk file given to preprocess.")
        if len(val[0]) == 0:
            raise UserError(f"The data set {dataset!r} has no validation rows with any of {targets} (its validation "
                            f"cores {info.get('cores', {}).get('val', [])} have no lab samples), so no epoch or "
                            "hyperparameter could be judged; rebuild it with scripts/preprocess.py --overwrite "
                            "(validation cores are drawn among labelled cores) or choose --test-cores.")
        if max_labels and max_labels < len(train[0]):
            keep = np.sort(np.random.default_rng(seed).choice(len(train[0]), size=max_labels, replace=False))
            train = (train[0].iloc[keep], train[1][keep])
        if test_labels:
            meta, x = test
            pick = core_label_mask(meta, targets, test_labels, seed,
                                   chosen_test_rows(data_root, test_label_rows, test_labels, seed))
            train = join_rows([train, (meta[pick], x[np.flatnonzero(pick)])])
        if test_spectra and stage == "baseline":
            spectra_only = unlabelled(test, info)
        root = [target_transform == "sqrt" and t in TARGETS for t in targets]  # a ratio can be negative: no root
        scaler = TargetScaler(root=root).fit(train[0][targets].to_numpy(np.float64))
    stats = None
    if needs_statistics(transform):
        if "channel_mean" not in info or "channel_std" not in info:
            raise UserError(f"data.transform = {transform!r} needs channel statistics in the info.toml of "
                            f"{dataset!r}; re-run scripts/preprocess.py.")
        stats = (channels(torch.tensor(info["channel_mean"], dtype=torch.float32)),
                 channels(torch.tensor(info["channel_std"], dtype=torch.float32)))
    return Prepared(
        train=to_arrays(train, targets, scaler, max_memory_gb * 2**30),
        val=to_arrays(val, targets, scaler, max_memory_gb * 2**30),
        targets=targets, scaler=scaler, transform_name=transform, channel_stats=stats,
        augment=augment and stage == "finetune", augment_min_fraction=augment_min_fraction,
        jitter=(jitter_gain, jitter_offset, jitter_width), absorption=jitter_absorption, channels=channels, info=info,
        unlabelled=to_arrays(spectra_only, targets, None) if spectra_only is not None else None,
    )

