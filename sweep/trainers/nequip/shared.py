"""Neighbour lists (and the rest of NequIP's data transforms) computed once per worker, not per epoch.

nequip 0.19's ``ASEDataset`` re-reads its extxyz file at every ``setup`` (statistics, fit,
validate) and re-runs its transforms, the neighbour list among them, every time a frame is
fetched: every frame, every epoch, in every trial. Trials of a sweep that share the frames,
the cutoff and the type names compute exactly the same neighbour lists.

:class:`SharedASEDataModule` is nequip's ``ASEDataModule`` (same arguments, so the same
config keys and the same checkpoint ``info_dict``) whose datasets are
:class:`SharedASEDataset`: a dataset that looks up its frames in a bounded, process-wide
cache keyed by the file's content and the exact transform and reader settings, and keeps
each frame's transformed ``AtomicDataDict`` after its first use. A Ray actor that Tune
reuses across trials keeps the cache, so a later trial with the same frames, ``r_max`` and
type names reads and transforms nothing; within one training, every epoch after the first
and the final validation reuse the first epoch's work.

Callers get clones of the cached tensors, so nothing a training does to its batches can
reach the next training. The cache is per process: ``DataLoader`` workers
(``num_workers > 0``) would each fill their own copy.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
from hydra.utils import instantiate
from nequip.data import AtomicDataDict
from nequip.data.datamodule import ASEDataModule
from nequip.data.dataset import ASEDataset, AtomicDataset
from omegaconf import DictConfig, ListConfig, OmegaConf

from sweep.trainers.nequip.config import SHARED_DATAMODULE_TARGET

_SHARED_DATASET_TARGET = SHARED_DATAMODULE_TARGET.replace("SharedASEDataModule", "SharedASEDataset")
_ASE_DATASET_TARGET = "nequip.data.dataset.ASEDataset"

#: Bounds of the process-wide cache (least recently used datasets go first).
MAX_ENTRIES = 16
MAX_BYTES = 512 * 2**20


@dataclass
class CacheStats:
    """Counters of the process-wide cache; subtract two snapshots for one training's share."""

    datasets_built: int = 0
    datasets_reused: int = 0
    frames_computed: int = 0
    frames_reused: int = 0
    #: Seconds spent reading dataset files (extxyz -> AtomicDataDict) on cache misses.
    read_seconds: float = 0.0
    #: Seconds spent running the transforms (type mapping, neighbour list) on cache misses.
    transform_seconds: float = 0.0
    #: What the reuses would have cost: each reused file's read time, each reused frame's transform time.
    read_seconds_saved: float = 0.0
    transform_seconds_saved: float = 0.0
    evictions: int = 0

    def minus(self, earlier: "CacheStats") -> "CacheStats":
        """The counts accumulated since ``earlier`` was taken."""
        return CacheStats(**{k: v - getattr(earlier, k) for k, v in asdict(self).items()})

    def as_dict(self) -> dict[str, float]:
        """Plain JSON-able dict (seconds rounded to µs)."""
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}


@dataclass
class _Entry:
    """One dataset file under one set of transforms: raw frames, and each frame once transformed."""

    raw: list[AtomicDataDict.Type]
    transforms: list[Callable]
    read_seconds: float
    done: list[AtomicDataDict.Type | None] = field(default_factory=list)
    cost: list[float] = field(default_factory=list)
    #: Tensor bytes held: the raw frames, plus what the transforms added.
    nbytes: int = 0

    def __post_init__(self) -> None:
        self.done = [None] * len(self.raw)
        self.cost = [0.0] * len(self.raw)
        self.nbytes = sum(_tensor_bytes(frame) for frame in self.raw)


_lock = threading.Lock()
_entries: "OrderedDict[str, _Entry]" = OrderedDict()
_stats = CacheStats()
_bytes = 0  # sum of nbytes over _entries


def cache_stats() -> CacheStats:
    """A snapshot of this process's cache counters."""
    with _lock:
        return copy.copy(_stats)


def clear_cache() -> None:
    """Drop every cached dataset and zero the counters (tests, benchmarks)."""
    global _stats, _bytes
    with _lock:
        _entries.clear()
        _stats = CacheStats()
        _bytes = 0


def cached_bytes() -> int:
    """Bytes of tensors the cache holds now."""
    with _lock:
        return _bytes


def _tensor_bytes(data: AtomicDataDict.Type, besides: AtomicDataDict.Type | None = None) -> int:
    """Bytes of the tensors in ``data`` that are not the very same tensors as in ``besides``."""
    besides = besides or {}
    return sum(v.element_size() * v.nelement() for k, v in data.items()
               if isinstance(v, torch.Tensor) and v is not besides.get(k))


def _plain(value: Any) -> Any:
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return copy.deepcopy(value)


def dataset_key(file_path: str, settings: dict[str, Any]) -> str:
    """Cache key: the file's bytes and the reader and transform settings (``r_max``, type names, backend, dtype)."""
    digest = hashlib.sha256()
    with open(file_path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _trim() -> None:
    """Evict least recently used entries beyond the bounds (the newest entry always stays); hold ``_lock``."""
    global _bytes
    while len(_entries) > 1 and (len(_entries) > MAX_ENTRIES or _bytes > MAX_BYTES):
        _, old = _entries.popitem(last=False)
        _bytes -= old.nbytes
        _stats.evictions += 1


def _entry_for(file_path: str, transforms: list, ase_args: dict, include_keys: list, exclude_keys: list,
               key_mapping: dict) -> _Entry:
    settings = {"transforms": transforms, "ase_args": ase_args, "include_keys": include_keys,
                "exclude_keys": exclude_keys, "key_mapping": key_mapping,
                # from_ase builds float tensors in torch's default dtype (nequip's global state)
                "dtype": str(torch.get_default_dtype())}
    key = dataset_key(file_path, settings)
    with _lock:
        entry = _entries.get(key)
        if entry is not None:
            _entries.move_to_end(key)
            _stats.datasets_reused += 1
            _stats.read_seconds_saved += entry.read_seconds
            return entry
    started = time.perf_counter()
    reader = ASEDataset(file_path, transforms=[], ase_args=ase_args, include_keys=include_keys,
                        exclude_keys=exclude_keys, key_mapping=key_mapping)
    entry = _Entry(raw=reader.data_list, transforms=[instantiate(t) for t in transforms],
                   read_seconds=time.perf_counter() - started)
    global _bytes
    with _lock:
        _stats.datasets_built += 1
        _stats.read_seconds += entry.read_seconds
        if key in _entries:  # another thread built it meanwhile: keep the first
            return _entries[key]
        _entries[key] = entry
        _bytes += entry.nbytes
        _trim()
    return entry


def _clone(data: AtomicDataDict.Type) -> AtomicDataDict.Type:
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in data.items()}


class SharedASEDataset(AtomicDataset):
    """nequip's ``ASEDataset`` whose frames and transformed frames come from the process-wide cache.

    Arguments are ``ASEDataset``'s, except that ``transforms`` is the list of transform
    *configs* (``_target_`` dicts), which is what makes the cache key exact: two datasets
    share their entry only if file content, reader options and every transform setting agree.
    """

    def __init__(
        self,
        file_path: str,
        transforms: list | None = None,
        ase_args: dict | None = None,
        include_keys: list | None = None,
        exclude_keys: list | None = None,
        key_mapping: dict | None = None,
    ):
        super().__init__(transforms=[])
        self.file_path = str(file_path)
        configs = _plain(transforms or [])
        if not all(isinstance(t, dict) and "_target_" in t for t in configs):
            # an instantiated transform would hide its settings (r_max) from the cache key
            raise TypeError("SharedASEDataset takes its transforms as `_target_` configs; instantiate it "
                            "with `_recursive_: false` (SharedASEDataModule does)")
        self._entry = _entry_for(self.file_path, configs, _plain(ase_args or {}), _plain(include_keys or []),
                                 _plain(exclude_keys or []), _plain(key_mapping or {}))

    def __len__(self) -> int:
        return len(self._entry.raw)

    def _indices(self, indices) -> list[int]:
        if isinstance(indices, slice):
            return list(range(len(self)))[indices]
        if isinstance(indices, torch.Tensor):
            return [int(i) for i in indices.reshape(-1).tolist()]
        return [int(i) for i in indices]

    def _get_data_list(self, indices) -> list[AtomicDataDict.Type]:
        """Raw (untransformed) frames, as ``ASEDataset`` gives them (used by ``num_atoms``)."""
        return [self._entry.raw[i] for i in self._indices(indices)]

    def __getitems__(self, indices) -> list[AtomicDataDict.Type]:
        """Transformed frames: computed on first use in this process, then cloned from the cache."""
        global _bytes
        out = []
        entry = self._entry
        for index in self._indices(indices):
            if not -len(self) <= index < len(self):
                raise IndexError(f"frame {index} of a {len(self)}-frame dataset")
            index %= len(self)
            done = entry.done[index]
            if done is None:
                started = time.perf_counter()
                data = entry.raw[index].copy()
                for transform in entry.transforms:
                    data = transform(data)
                seconds = time.perf_counter() - started
                with _lock:
                    if entry.done[index] is None:
                        entry.done[index] = data
                        entry.cost[index] = seconds
                        added = _tensor_bytes(data, besides=entry.raw[index])
                        entry.nbytes += added
                        if any(e is entry for e in _entries.values()):  # not evicted meanwhile
                            _bytes += added
                    _stats.frames_computed += 1
                    _stats.transform_seconds += seconds
                    _trim()
                done = entry.done[index]
            else:
                with _lock:
                    _stats.frames_reused += 1
                    _stats.transform_seconds_saved += entry.cost[index]
            out.append(_clone(done))
        return out


class SharedASEDataModule(ASEDataModule):
    """nequip's ``ASEDataModule`` (same arguments) reading through :class:`SharedASEDataset`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for configs in (self.train_dataset_config, self.val_dataset_config, self.test_dataset_config,
                        self.predict_dataset_config):
            for config in configs:
                if config.get("_target_") == _ASE_DATASET_TARGET:
                    # the transforms reach the dataset as configs, so that they can key the cache
                    config.update({"_target_": _SHARED_DATASET_TARGET, "_recursive_": False, "_convert_": "all"})
