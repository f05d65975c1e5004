"""Streaming pixel-series text from a samples store (``samples.zarr``, docs/formats.md).

:class:`SeriesStream` is a :class:`torch.utils.data.IterableDataset` that reads one shard (a run of
rows, by default one Zarr chunk along ``n``) at a time, so the whole set is never in memory.  Shards
are dealt to ``rank * num_workers + worker_id`` out of ``world_size * num_workers`` readers; each
sample is produced exactly once per epoch over all readers.  The order of shards and of rows inside
a shard is a function of ``(seed, epoch)`` only, and the span-corruption noise of a sample is a
function of ``(seed, epoch, row)``, so a run can be resumed exactly by skipping batches.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from eoflow.errors import DataError, InputError
from eoflow.vae.corruption import span_corrupt
from eoflow.vae.serialize import PixelSeries, to_sexpr
from eoflow.vae.tokenizer import EOS_ID, PAD_ID, TASK_SPANS_ID, TASK_TEXT_ID, encode

__all__ = ["SamplesStore", "SeriesStream", "TextSpec", "collate", "rank_and_world"]

_EPOCH = dt.date(1970, 1, 1)


@dataclass
class TextSpec:
    """How rows become text (see :func:`eoflow.vae.serialize.to_sexpr`)."""

    features: list[str] | None = None
    compact: bool = True
    precision: int | dict[str, int] = 3
    default_precision: int = 3
    loc_precision: int = 4
    max_len: int = 2048
    widths: int | dict[str, int] | None = None

    def precisions(self, features: Sequence[str]) -> dict[str, int]:
        """Decimals per feature."""
        if isinstance(self.precision, dict):
            return {f: int(self.precision.get(f, self.default_precision)) for f in features}
        return dict.fromkeys(features, int(self.precision))


class SamplesStore:
    """Read-only view of a samples store; arrays are read block by block.

    Parameters
    ----------
    path
        The ``samples.zarr`` group.
    """

    def __init__(self, path: str | Path) -> None:
        import zarr

        self.path = Path(path)
        if not self.path.exists():
            raise InputError(
                f"{self.path}: samples store not found", "run the sample stage or check data.store"
            )
        try:
            self.group = zarr.open_group(str(self.path), mode="r")
        except Exception as exc:  # zarr raises several types for a non-group path
            raise InputError(f"{self.path}: not a Zarr group ({type(exc).__name__})") from exc
        names = set(self.group.array_keys())
        for req in ("X", "y"):
            if req not in names:
                raise InputError(
                    f"{self.path}: array {req!r} missing", "write the store as in docs/formats.md"
                )
        self.arrays = names
        self.X = self.group["X"]
        if self.X.ndim != 3:
            raise InputError(
                f"{self.path}/X: shape {self.X.shape}, expected (n, n_time, n_feature)"
            )
        self.attrs = dict(self.group.attrs)
        self.n, self.n_time, self.n_feature = (int(s) for s in self.X.shape)
        self.features: list[str] = list(self.attrs.get("features") or [])
        if len(self.features) != self.n_feature:
            raise InputError(
                f"{self.path}: attrs['features'] has {len(self.features)} names for {self.n_feature} features"
            )
        self.time: list[str] = [str(t)[:10] for t in self.attrs.get("time") or []]
        self.classes: list[dict[str, Any]] = list(self.attrs.get("classes") or [])
        self.targets: dict[str, str] = dict(self.attrs.get("targets") or {})
        self.chunk_rows = int(self.X.chunks[0])

    def feature_index(self, features: Sequence[str] | None) -> list[int]:
        """Column indices of ``features`` (all when None)."""
        if features is None:
            return list(range(self.n_feature))
        missing = [f for f in features if f not in self.features]
        if missing:
            raise InputError(
                f"{self.path}: features {missing} not in the store",
                f"data.features must be a subset of {self.features}",
            )
        return [self.features.index(f) for f in features]

    def vector(self, name: str) -> np.ndarray:
        """A 1-D per-sample array read whole (targets, split flags, labels: small)."""
        if name not in self.arrays:
            raise InputError(f"{self.path}: array {name!r} missing")
        return np.asarray(self.group[name][...])

    def target_array(self, target: str) -> str:
        """Array name holding ``target`` ('class' is ``y``)."""
        if target == "class":
            return "y"
        if target in self.targets:
            return self.targets[target]
        raise InputError(
            f"{self.path}: target {target!r} unknown",
            f"use 'class' or one of attrs['targets'] {sorted(self.targets)}",
        )

    def split_mask(self, split_array: str | None, split: str) -> np.ndarray:
        """Rows of ``split`` ('train' = flag False, 'test' = flag True, 'all')."""
        if split == "all" or split_array is None:
            if split != "all" and split_array is None:
                raise InputError(
                    f"{self.path}: split {split!r} asked but data.split_array is unset"
                )
            return np.ones(self.n, dtype=bool)
        flag = self.vector(split_array).astype(bool)
        return flag if split == "test" else ~flag

    def class_ids(self) -> list[int]:
        """Class ids in attrs order (or the sorted ids present in ``y``)."""
        if self.classes:
            return [int(c["id"]) for c in self.classes]
        return sorted(int(v) for v in np.unique(self.vector("y")))

    def read_block(self, start: int, stop: int, cols: list[int]) -> dict[str, np.ndarray]:
        """Rows ``start:stop``: values, dates (ISO strings) and coordinates."""
        x = np.asarray(self.X[start:stop])[:, :, cols]
        n = stop - start
        if "date" in self.arrays:
            days = np.asarray(self.group["date"][start:stop])
            dates = [[str(_EPOCH + dt.timedelta(days=int(d))) for d in row] for row in days]
        else:
            if len(self.time) != self.n_time:
                raise InputError(
                    f"{self.path}: attrs['time'] has {len(self.time)} dates for {self.n_time} steps"
                )
            dates = [self.time] * n
        xc = (
            np.asarray(self.group["xcoord"][start:stop]) if "xcoord" in self.arrays else np.zeros(n)
        )
        yc = (
            np.asarray(self.group["ycoord"][start:stop]) if "ycoord" in self.arrays else np.zeros(n)
        )
        return {"X": x, "dates": dates, "x": xc, "y": yc}


def rank_and_world() -> tuple[int, int]:
    """Distributed rank and world size (torch.distributed if initialised, else RANK/WORLD_SIZE)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


@dataclass
class SeriesStream(IterableDataset):
    """Stream examples from a samples store.

    Parameters
    ----------
    store
        Path of ``samples.zarr``.
    mode
        ``pretrain`` (span corruption / denoising ids), ``value`` (clean text ids + target value).
    text
        Serialisation settings.
    split_array, split
        Row selection (see :meth:`SamplesStore.split_mask`).
    target
        For ``value`` mode: 'class' or a regression target name.
    seed
        Base seed of shuffling and corruption.
    shuffle
        Shuffle shards and rows (per epoch).
    density, mean_span, denoise_fraction
        Pretraining objective.
    rows_per_shard
        Shard size (default: the store's chunk rows).
    holdout, part
        Hold out about ``holdout`` of the selected rows, whole locations (``xcoord, ycoord``) at a
        time so that no site is on both sides, chosen by ``seed``; ``part`` picks the rest
        (``fit``) or the held-out rows (``holdout``).  For validation during fine-tuning.
    rank, world_size
        Override the distributed rank (default: :func:`rank_and_world`).
    """

    store: str
    mode: Literal["pretrain", "value"] = "pretrain"
    text: TextSpec = field(default_factory=TextSpec)
    split_array: str | None = None
    split: str = "all"
    target: str | None = None
    seed: int = 0
    shuffle: bool = True
    density: float = 0.15
    mean_span: float = 20.0
    denoise_fraction: float = 0.5
    rows_per_shard: int | None = None
    holdout: float = 0.0
    part: Literal["fit", "holdout"] = "fit"
    rank: int | None = None
    world_size: int | None = None
    epoch: int = 0

    def __post_init__(self) -> None:
        super().__init__()
        meta = SamplesStore(self.store)  # validate early, in the main process
        self.n = meta.n
        self._cols = meta.feature_index(self.text.features)
        self.features = [meta.features[i] for i in self._cols]
        self._chunk = self.rows_per_shard or meta.chunk_rows
        self._class_ids = meta.class_ids()
        self._store: SamplesStore | None = None
        self._selected: np.ndarray | None = None
        self._values: np.ndarray | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (changes shuffling and corruption noise)."""
        self.epoch = int(epoch)

    # ------------------------------------------------------------------ helpers
    def _open(self) -> SamplesStore:
        if self._store is None:
            self._store = SamplesStore(self.store)
            self._selected = self._store.split_mask(self.split_array, self.split)
            if self.mode == "value":
                if not self.target:
                    raise DataError("value mode needs a target ('class' or a target name)")
                raw = self._store.vector(self._store.target_array(self.target))
                if self.target == "class":
                    lut = {c: i for i, c in enumerate(self._class_ids)}
                    vals = np.array([lut.get(int(v), -1) for v in raw], dtype=np.float64)
                    vals[vals < 0] = np.nan
                else:
                    vals = raw.astype(np.float64)
                self._values = vals
                self._selected &= np.isfinite(vals)
            if self.holdout > 0:
                held = self._holdout_rows(self._store, self._selected)
                self._selected &= held if self.part == "holdout" else ~held
        return self._store

    def _holdout_rows(self, store: SamplesStore, selected: np.ndarray) -> np.ndarray:
        """Whole locations, in a seeded random order, until ``holdout`` of the rows is reached."""
        rows = np.flatnonzero(selected)
        if {"xcoord", "ycoord"} <= store.arrays:
            xy = np.stack([store.vector("xcoord")[rows], store.vector("ycoord")[rows]], 1)
            _, group = np.unique(xy, axis=0, return_inverse=True)
        else:
            group = np.arange(rows.size)
        group = group.ravel()
        n_groups = int(group.max()) + 1 if rows.size else 0
        order = np.random.default_rng([self.seed, 0x401D]).permutation(n_groups)
        sizes = np.bincount(group, minlength=n_groups)[order]
        n_held = int(np.searchsorted(np.cumsum(sizes), self.holdout * rows.size) + 1)
        held = np.zeros(self.n, dtype=bool)
        held[rows[np.isin(group, order[: min(n_held, max(n_groups - 1, 0))])]] = True
        return held

    def selected_rows(self) -> np.ndarray:
        """Indices of the rows this dataset yields per epoch (over all readers)."""
        self._open()
        assert self._selected is not None
        return np.flatnonzero(self._selected)

    def values(self) -> np.ndarray:
        """Target values of every row (NaN where missing; class index for 'class')."""
        self._open()
        assert self._values is not None
        return self._values

    def shards(self) -> list[tuple[int, int]]:
        """Shard row ranges in this epoch's order."""
        out = [(s, min(s + self._chunk, self.n)) for s in range(0, self.n, self._chunk)]
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(out))
            out = [out[i] for i in order]
        return out

    def _reader(self) -> tuple[int, int]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        rank, world = rank_and_world()
        rank = self.rank if self.rank is not None else rank
        world = self.world_size if self.world_size is not None else world
        return rank * nw + wid, world * nw

    def series(self, block: dict[str, Any], i: int) -> PixelSeries:
        """Row ``i`` of a block as a :class:`PixelSeries`."""
        return PixelSeries(
            x=float(block["x"][i]),
            y=float(block["y"][i]),
            dates=list(block["dates"][i]),
            features=self.features,
            values=block["X"][i],
        )

    def text_of(self, series: PixelSeries, row: int) -> np.ndarray:
        """Byte ids (no EOS) of a series, checked against the encoder length."""
        txt = to_sexpr(
            series,
            compact=self.text.compact,
            precision=self.text.precisions(self.features),
            loc_precision=self.text.loc_precision,
            with_targets=False,
            widths=self.text.widths,
        )
        ids = encode(txt, add_eos=False)
        if len(ids) + 1 > self.text.max_len:
            raise DataError(
                f"{self.store}: row {row} serialises to {len(ids) + 1} bytes > serialize.max_len "
                f"{self.text.max_len}",
                "raise serialize.max_len, use compact text, fewer features or lower precision",
            )
        return ids

    def example(self, series: PixelSeries, row: int) -> dict[str, Any]:
        """The training/inference example of one row."""
        ids = self.text_of(series, row)
        if self.mode == "pretrain":
            rng = np.random.default_rng([self.seed, self.epoch, row])
            inputs, targets = span_corrupt(ids, rng, density=self.density, mean_span=self.mean_span)
            if rng.random() < self.denoise_fraction:
                return {"input_ids": inputs, "labels": np.append(ids, EOS_ID).astype(np.int32),
                        "start": TASK_TEXT_ID, "index": row}  # fmt: skip
            return {"input_ids": inputs, "labels": targets, "start": TASK_SPANS_ID, "index": row}
        assert self._values is not None
        return {"input_ids": np.append(ids, EOS_ID).astype(np.int32), "value": float(self._values[row]),
                "index": row}  # fmt: skip

    def __iter__(self) -> Iterator[dict[str, Any]]:
        store = self._open()
        assert self._selected is not None
        gid, total = self._reader()
        for start, stop in self.shards()[gid::total]:
            rows = np.flatnonzero(self._selected[start:stop])
            if rows.size == 0:
                continue
            if self.shuffle:
                rows = np.random.default_rng([self.seed, self.epoch, start, 1]).permutation(rows)
            block = store.read_block(start, stop, self._cols)
            for i in rows.tolist():
                yield self.example(self.series(block, i), start + i)


def _pad(seqs: list[np.ndarray], value: int) -> torch.Tensor:
    n = max(len(s) for s in seqs)
    out = np.full((len(seqs), n), value, dtype=np.int64)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return torch.from_numpy(out)


def collate(batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Pad a list of examples; decoder inputs are the task token then the shifted labels."""
    out = {
        "input_ids": _pad([b["input_ids"] for b in batch], PAD_ID),
        "index": torch.tensor([b["index"] for b in batch], dtype=torch.long),
    }
    if "labels" in batch[0]:
        dec = [np.concatenate([[b["start"]], b["labels"][:-1]]) for b in batch]
        out["decoder_input_ids"] = _pad(dec, PAD_ID)
        out["labels"] = _pad([b["labels"] for b in batch], -100)
    if "value" in batch[0]:
        out["value"] = torch.tensor([b["value"] for b in batch], dtype=torch.float32)
    return out
