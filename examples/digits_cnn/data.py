"""scikit-learn's 8x8 digit images as a LightningDataModule: stratified train/val/test splits."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, TensorDataset


class DigitsDataModule(pl.LightningDataModule):
    """Images as float tensors (N, 1, 8, 8) with values 0..16, labels 0..9."""

    def __init__(
        self, batch_size: int = 64, val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0
    ) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed

    def setup(self, stage: str | None = None) -> None:
        images, labels = load_digits(return_X_y=True)
        x = torch.tensor(images, dtype=torch.float32).reshape(-1, 1, 8, 8)
        y = torch.tensor(labels, dtype=torch.long)
        # The same seed gives every trial the same split: trials differ only in their hyperparameters.
        x_rest, x_test, y_rest, y_test = train_test_split(
            x, y, test_size=self.test_fraction, stratify=y, random_state=self.seed
        )
        x_train, x_val, y_train, y_val = train_test_split(
            x_rest,
            y_rest,
            test_size=self.val_fraction / (1 - self.test_fraction),
            stratify=y_rest,
            random_state=self.seed,
        )
        self.train_set = TensorDataset(x_train, y_train)
        self.val_set = TensorDataset(x_val, y_val)
        self.test_set = TensorDataset(x_test, y_test)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=512)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=512)
