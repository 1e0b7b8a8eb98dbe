"""A prepared Dataset as torch tensors, and the mini-batches cut from them."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

if TYPE_CHECKING:
    from hyperflow.components.data import Dataset

__all__ = ["Split", "TensorBatches", "split_tensors"]

Split = Literal["train", "val", "test"]


def split_tensors(data: Dataset, split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    """One split's features (float32) and targets (int64 class ids, or float32 values)."""
    x, y = {
        "train": (data.X_train, data.y_train),
        "val": (data.X_val, data.y_val),
        "test": (data.X_test, data.y_test),
    }[split]
    target_dtype = torch.long if data.task == "classification" else torch.float32
    return (
        torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32),
        torch.as_tensor(np.ascontiguousarray(y), dtype=target_dtype),
    )


class TensorBatches:
    """Mini-batches cut from in-memory tensors, reshuffled each epoch by a seeded generator.

    A DataLoader over a TensorDataset collates sample by sample; slicing the tensors directly is
    several times cheaper per batch for small models. With `per_epoch=True` an epoch is a single
    item, the list of its mini-batches, for a module that steps through them itself (MLPModule).
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        per_epoch: bool = False,
    ) -> None:
        self.x, self.y = x, y
        self.batch_size = max(1, int(batch_size))
        self.shuffle = shuffle
        self.per_epoch = per_epoch
        self._gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return 1 if self.per_epoch else math.ceil(len(self.x) / self.batch_size)

    def _batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.x)
        if self.shuffle:
            order = torch.randperm(n, generator=self._gen)
            x, y = self.x[order], self.y[order]
        else:
            x, y = self.x, self.y
        return [
            (x[i : i + self.batch_size], y[i : i + self.batch_size]) for i in range(0, n, self.batch_size)
        ]

    def __iter__(self) -> Iterator[Any]:
        if self.per_epoch:
            yield self._batches()
        else:
            yield from self._batches()
