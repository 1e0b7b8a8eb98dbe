"""The built-in model's adapter: the MLP of `model.*` on the built-in data set or file."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import numpy as np
import torch

from hyperflow.components.adapters._base import FitJob, Fitted, ModelAdapter, raw_example, scoring_model
from hyperflow.components.adapters._control import control_for
from hyperflow.components.batches import TensorBatches, split_tensors
from hyperflow.components.devices import lightning_precision, torch_device
from hyperflow.components.model import MLPModule, after_warmup
from hyperflow.components.names import test_metric_name

if TYPE_CHECKING:
    from hyperflow.components.curves import StopPolicy
    from hyperflow.components.data import Dataset

__all__ = ["MLPAdapter"]

# Model values that are the batches', not the module's (max_epochs is both the Trainer's and the
# module's: the length of its schedules).
_NOT_MODULE_ARGS = ("batch_size",)


class MLPAdapter(ModelAdapter):
    """`MLPModule` built from the trial's model values, trained on the prepared data set's tensors."""

    def build(self, data: Dataset | None, params: Mapping[str, Any]) -> MLPModule:
        if data is None:
            raise ValueError("the built-in model needs a Dataset")
        values = self.spec.resolve(params)
        batch_size = int(values.get("batch_size", 64))
        return MLPModule(
            in_features=data.n_features,
            out_features=data.n_outputs,
            task=data.task,
            steps_per_epoch=math.ceil(len(data.X_train) / batch_size),
            target_std=data.target_std if data.task == "regression" else 1.0,
            **{k: v for k, v in values.items() if k not in _NOT_MODULE_ARGS},
        )

    def stop_policy(self, policy: StopPolicy, params: Mapping[str, Any]) -> StopPolicy:
        """`median` never stops a trial while its learning rate still rises (warm-up, one_cycle)."""
        return after_warmup(policy, self.spec.resolve(params))

    def fit(self, job: FitJob) -> Fitted:
        module, data = job.module, job.data
        assert isinstance(module, MLPModule) and data is not None, "build() makes the module from the data"
        # The splits go to the trial's device once, here: every batch is then a slice on the device.
        device = torch_device(self.spec.accelerator)
        x_tr, y_tr = (t.to(device) for t in split_tensors(data, "train"))
        batch_size = int(self.spec.resolve(job.params).get("batch_size", 64))
        # One item per epoch: the module steps through the mini-batches itself (see MLPModule).
        train = TensorBatches(x_tr, y_tr, batch_size, shuffle=True, seed=job.seed, per_epoch=True)
        module.set_validation_data(*(t.to(device) for t in split_tensors(data, "val")))
        control = control_for(job.guard)
        module.batch_guard = control.guard
        trainer = pl.Trainer(
            max_epochs=self.spec.max_epochs(job.params),
            accelerator=self.spec.accelerator,
            devices=1,
            precision=lightning_precision(self.spec.precision),
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            callbacks=[control, *job.callbacks],
        )
        trainer.fit(module, train_dataloaders=train)
        return Fitted(module.cpu())

    def evaluate(
        self, module: torch.nn.Module, data: Dataset | None, params: Mapping[str, Any]
    ) -> dict[str, float]:
        """test_loss and test_accuracy (classification) or test_rmse (regression, original units)."""
        assert isinstance(module, MLPModule) and data is not None
        device = torch_device(self.spec.accelerator)
        module.eval().to(device)
        try:
            with torch.no_grad():
                metrics = module.validation_metrics(*(t.to(device) for t in split_tensors(data, "test")))
            return {test_metric_name(k): float(v) for k, v in metrics.items()}
        finally:
            module.cpu()  # exported and saved from the CPU: loads on a machine without a GPU

    def export(
        self, module: torch.nn.Module, data: Dataset | None, params: Mapping[str, Any]
    ) -> tuple[torch.nn.Module, np.ndarray]:
        """The MLP behind the data set's standardisation: raw feature rows in."""
        assert isinstance(module, MLPModule) and data is not None
        return scoring_model(module.model, data), raw_example(data)
