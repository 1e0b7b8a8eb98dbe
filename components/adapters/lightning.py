"""A user's LightningModule (and LightningDataModule) by import path, trained by its own Lightning package."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hyperflow.components.adapters._base import FitJob, Fitted, ModelAdapter, raw_example, scoring_model
from hyperflow.components.adapters._control import control_for, quiet_lightning
from hyperflow.components.batches import TensorBatches, split_tensors
from hyperflow.components.devices import lightning_precision, torch_device
from hyperflow.components.names import test_metric_name
from hyperflow.components.usercode import import_object, lightning_namespace, signature

if TYPE_CHECKING:
    import lightning.pytorch as pl

    from hyperflow.components.data import Dataset
    from hyperflow.components.trial import TrialSpec
    from hyperflow.components.usercode import UserSpec

__all__ = ["LightningAdapter"]


def _overrides(obj: Any, namespace: str, base: str, method: str) -> bool:
    base_cls = getattr(importlib.import_module(namespace), base)
    return getattr(type(obj), method, None) is not getattr(base_cls, method, None)


def _trainer(namespace: str, **kwargs: Any) -> Any:
    trainer_cls = importlib.import_module(namespace).Trainer
    return trainer_cls(
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def _namespace(module: torch.nn.Module) -> str:
    return lightning_namespace(type(module)) or "lightning.pytorch"


class _Columns(torch.nn.Module):
    """A regression module's output as one column, what the built-in scoring wrapper expects."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out.reshape(out.shape[0], -1)


class LightningAdapter(ModelAdapter):
    """`model.module` (a LightningModule class) and, optionally, `data.module` (a LightningDataModule).

    The sampled values go to the module's constructor (those it names, or all through `**kwargs`),
    with `model.args` and the fixed model values it names; a DataModule gets the fixed values it
    names, `data.args`, the sampled values it names and the study seed. Without a DataModule the
    module trains on the built-in data set as (x, y) batches of `batch_size`.
    """

    def __init__(self, spec: TrialSpec) -> None:
        super().__init__(spec)
        assert spec.user is not None and spec.user.module is not None, "a LightningModule's TrialSpec"
        self.user: UserSpec = spec.user
        self.needs_dataset = self.user.data_module is None

    # ---------------------------------------------------------------- constructors' arguments

    def module_kwargs(self, cls: type, params: Mapping[str, Any], data: Dataset | None) -> dict[str, Any]:
        """The module's constructor arguments: the fixed model values it names, model.args, the sampled values."""
        sig = signature(cls)
        args = set(self.user.model_args)
        values = self.spec.resolve(params)
        kwargs = {
            k: v
            for k, v in values.items()
            if k in sig.names or (sig.var_keyword and (k in args or k in params))
        }
        if data is not None:
            derived = {"in_features": data.n_features, "out_features": data.n_outputs, "task": data.task}
            kwargs.update({k: v for k, v in derived.items() if k in sig.names and k not in kwargs})
        return kwargs

    def datamodule_kwargs(self, cls: type, params: Mapping[str, Any]) -> dict[str, Any]:
        """The DataModule's constructor arguments: fixed model values it names < data.args < sampled values."""
        sig = signature(cls)
        kwargs = {k: v for k, v in self.spec.fixed.items() if k in sig.names}
        if "seed" in sig.names:
            kwargs["seed"] = self.user.seed
        kwargs.update(self.user.data_args)
        kwargs.update({k: v for k, v in params.items() if k in sig.names})
        return kwargs

    def datamodule(self, params: Mapping[str, Any]) -> Any:
        """The user's LightningDataModule for a trial (its batch size or other data values may be searched)."""
        assert self.user.data_module is not None
        cls = import_object(self.user.data_module, key="data.module")
        return cls(**self.datamodule_kwargs(cls, params))

    # ---------------------------------------------------------------- the interface

    def build(self, data: Dataset | None, params: Mapping[str, Any]) -> pl.LightningModule:
        """The user's module before training (data None: a DataModule's study, or resume rebuilding it)."""
        assert self.user.module is not None
        cls = import_object(self.user.module)
        module: pl.LightningModule = cls(**self.module_kwargs(cls, params, data))
        return module

    def fit(self, job: FitJob) -> Fitted:
        """Train with the Trainer of the module's own Lightning package; the module ends on the CPU.

        Its data comes from the user's DataModule, else from the built-in data set as (x, y) batches
        of `batch_size` (train shuffled by the trial's seed, val in order).
        """
        module, data, params = job.module, job.data, job.params
        assert module is not None
        namespace = _namespace(module)
        trainer = _trainer(
            namespace,
            max_epochs=self.spec.max_epochs(params),
            accelerator=self.spec.accelerator,
            precision=lightning_precision(self.spec.precision),
            num_sanity_val_steps=0,
            callbacks=[control_for(job.guard, namespace), *job.callbacks],
        )
        if self.user.data_module:
            trainer.fit(module, datamodule=self.datamodule(params))
        else:
            if data is None:
                raise ValueError("a LightningModule without data.module needs the built-in data set")
            # The built-in splits go to the device once; Lightning's per-batch transfer is then a no-op.
            device = torch_device(self.spec.accelerator)
            x_tr, y_tr = (t.to(device) for t in split_tensors(data, "train"))
            x_va, y_va = (t.to(device) for t in split_tensors(data, "val"))
            batch_size = int(self.spec.resolve(params).get("batch_size", 64))
            train = TensorBatches(x_tr, y_tr, batch_size, shuffle=True, seed=job.seed)
            val = TensorBatches(x_va, y_va, max(batch_size, 512), shuffle=False)
            has_validation = _overrides(module, namespace, "LightningModule", "validation_step")
            trainer.fit(module, train_dataloaders=train, val_dataloaders=val if has_validation else None)
        module.cpu()
        return Fitted(module)

    def evaluate(
        self, module: torch.nn.Module, data: Dataset | None, params: Mapping[str, Any]
    ) -> dict[str, float]:
        """The module's metrics on the test split: `trainer.test` when it has a `test_step`.

        Without a `test_step` (or when that logs no `test_<metric>`), its `validation_step` runs on
        the test split and its `val_*` metrics are renamed `test_*`; a DataModule without a
        `test_dataloader` is scored on its validation split.
        """
        quiet_lightning()
        namespace = _namespace(module)
        trainer = _trainer(
            namespace, accelerator=self.spec.accelerator, precision=lightning_precision(self.spec.precision)
        )
        wanted = test_metric_name(self.spec.metric)
        datamodule = self.datamodule(params) if self.user.data_module else None
        has_test_loader = datamodule is None or _overrides(
            datamodule, namespace, "LightningDataModule", "test_dataloader"
        )
        if datamodule is None:
            assert data is not None
            device = torch_device(self.spec.accelerator)
            x_te, y_te = (t.to(device) for t in split_tensors(data, "test"))
            loader: Any = TensorBatches(x_te, y_te, 512, shuffle=False)
        metrics: dict[str, float] = {}
        if has_test_loader and _overrides(module, namespace, "LightningModule", "test_step"):
            if datamodule is not None:
                (out,) = trainer.test(module, datamodule=datamodule, verbose=False)
            else:
                (out,) = trainer.test(module, dataloaders=loader, verbose=False)
            metrics.update({k: float(v) for k, v in out.items()})
        if wanted not in metrics:
            if datamodule is None:
                (out,) = trainer.validate(module, dataloaders=loader, verbose=False)
            elif has_test_loader:
                datamodule.prepare_data()
                datamodule.setup("test")
                (out,) = trainer.validate(module, dataloaders=datamodule.test_dataloader(), verbose=False)
            else:
                (out,) = trainer.validate(module, datamodule=datamodule, verbose=False)
            for key, value in out.items():
                name = "test_" + key.removeprefix("val_") if key.startswith("val_") else key
                metrics.setdefault(name, float(value))
        if wanted not in metrics:
            logged = ", ".join(sorted(metrics)) or "nothing"
            raise ValueError(
                f"{type(module).__name__} logged no {wanted} on the test split (logged: {logged}); "
                f"log {self.spec.metric} in validation_step, or {wanted} in test_step"
            )
        # Exported and saved from the CPU, whatever device tested it: loads on a machine without a GPU.
        module.cpu().eval()
        return metrics

    def export(
        self, module: torch.nn.Module, data: Dataset | None, params: Mapping[str, Any]
    ) -> tuple[torch.nn.Module, np.ndarray]:
        """With a DataModule the model takes what the module's `forward` takes (the first element of a
        batch); on a built-in data set it takes raw feature rows, like the built-in model."""
        module = module.eval()
        if data is not None and not self.user.data_module:
            net = _Columns(module) if data.task == "regression" else module
            return scoring_model(net, data), raw_example(data)
        return module, self._example_input(module, params).numpy()

    def _example_input(self, module: torch.nn.Module, params: Mapping[str, Any]) -> torch.Tensor:
        """A few input rows from the DataModule's test split (else its validation split)."""
        datamodule = self.datamodule(params)
        datamodule.prepare_data()
        if _overrides(datamodule, _namespace(module), "LightningDataModule", "test_dataloader"):
            datamodule.setup("test")
            loader = datamodule.test_dataloader()
        else:
            datamodule.setup("validate")
            loader = datamodule.val_dataloader()
        batch = next(iter(loader))
        x = batch[0] if isinstance(batch, list | tuple) else batch
        if not isinstance(x, torch.Tensor):
            raise ValueError(
                f"best_model: a batch of {self.user.data_module} must be a "
                f"tensor or start with one (the model's input), not {type(x).__name__}"
            )
        # More than one row, so that the exported graph keeps a dynamic batch dimension.
        return x[:5].detach().cpu()
