"""The Lightning side of a trial's guard: a callback that checks every batch and reports every epoch."""

from __future__ import annotations

import functools
import importlib
import logging
import warnings
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping

from hyperflow.components.trial import TrialGuard
from hyperflow.components.weights import weight_metrics

__all__ = ["TrialControl", "control_for", "quiet_lightning"]


class TrialControl(EarlyStopping):
    """Per-batch guard and per-epoch reporter of a trial trained by a Lightning Trainer.

    It subclasses EarlyStopping only so that Lightning calls its `on_train_epoch_end` after the
    module's own (Lightning's hard-coded "monitoring callbacks"), when every metric of the epoch —
    validation and whatever the module logs at epoch end — is in `trainer.callback_metrics`. The
    checks themselves are the trial's `TrialGuard`.
    """

    def __init__(self, guard: TrialGuard) -> None:
        Callback.__init__(self)
        self.trial_guard = guard
        self.epoch = 0

    # EarlyStopping's own behaviour is switched off: these are the only hooks that act.
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        pass

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass

    @property
    def state_key(self) -> str:
        return "hyperflow_trial_control"

    def guard(self, batch_idx: int, loss: torch.Tensor | float | None) -> None:
        """Before a batch (loss None): interruption and time budgets; after: a finite loss.

        MLPModule's `batch_guard` (it passes the loss's value); a user's module passes the tensor.
        """
        if loss is None:
            self.trial_guard.check()
        else:
            value = loss if isinstance(loss, float) else loss.item()  # ~1 us; torch.isfinite ~10 us
            self.trial_guard.check_loss(value, self.epoch, batch_idx)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epoch = trainer.current_epoch

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.guard(batch_idx, None)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            self.guard(batch_idx, loss)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if isinstance(v, torch.Tensor) and v.numel() == 1
        }
        metrics.update(getattr(pl_module, "epoch_metrics", None) or {})
        epoch = trainer.current_epoch
        weights = (
            weight_metrics(pl_module.named_parameters()) if self.trial_guard.logs_weights(epoch) else None
        )
        if self.trial_guard.epoch_end(epoch, metrics, weights) is not None:
            trainer.should_stop = True


@functools.cache
def _control_class(namespace: str) -> type[TrialControl]:
    """TrialControl as a `namespace` EarlyStopping, so that that package's Trainer orders it last."""
    callbacks = importlib.import_module(namespace + ".callbacks")
    return type(TrialControl.__name__, (TrialControl, callbacks.EarlyStopping), {})


def control_for(guard: TrialGuard, namespace: str = "lightning.pytorch") -> TrialControl:
    """The trial's callback for a Trainer of `namespace` (`lightning.pytorch` or `pytorch_lightning`).

    Lightning calls "monitoring" callbacks after the module's epoch-end hook only when they are
    EarlyStopping instances of the Trainer's own package.
    """
    if namespace == "lightning.pytorch":
        return TrialControl(guard)
    return _control_class(namespace)(guard)


def quiet_lightning() -> None:
    """Lightning's INFO lines and its warnings about small data sets stay out of a search's output."""
    for name in (
        "lightning.pytorch",
        "lightning.fabric",
        "lightning",
        "pytorch_lightning",
        "lightning_fabric",
    ):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*The number of training batches.*")
    warnings.filterwarnings("ignore", message=r".*GPU available but not used.*")
    warnings.filterwarnings("ignore", message=r".*LightningModule.configure_optimizers.*")
    warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*")
