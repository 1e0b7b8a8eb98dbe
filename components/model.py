"""The built-in model: a plain MLP (nn.Module), the LightningModule that trains it, param_count."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar

import lightning.pytorch as pl
import torch
from torch import nn

from hyperflow.components.architecture import hidden_layer_sizes

__all__ = [
    "MLP",
    "MLPModule",
    "ScoringModel",
    "after_warmup",
    "expected_param_count",
    "lr_factor",
    "param_count",
    "rising_epochs",
    "scheduled_value",
]

Task = Literal["classification", "regression"]
P = TypeVar("P")

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "selu": nn.SELU,
}

# torch.nn.init.calculate_gain knows these; the others are close enough to relu for init.
_GAIN_NAME = {
    "relu": "relu",
    "tanh": "tanh",
    "sigmoid": "sigmoid",
    "leaky_relu": "leaky_relu",
    "selu": "selu",
}


class MLP(nn.Module):
    """A multi-layer perceptron: [Linear → (BatchNorm) → activation → (Dropout)] * k → Linear."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_layers: Sequence[int] = (128, 64),
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        init: str = "kaiming",
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}")
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden_layers:
            layers.append(nn.Linear(width, size))
            if batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(_ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)
        self._init_weights(init, activation)

    def _init_weights(self, init: str, activation: str) -> None:
        if init == "default":
            return
        linears = [m for m in self.net if isinstance(m, nn.Linear)]
        for i, layer in enumerate(linears):
            # The output layer feeds no activation: initialise it for a linear unit.
            nonlinearity = "linear" if i == len(linears) - 1 else _GAIN_NAME.get(activation, "relu")
            if init == "kaiming":
                if nonlinearity == "relu":
                    nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                elif nonlinearity == "leaky_relu":
                    nn.init.kaiming_normal_(layer.weight, nonlinearity="leaky_relu")
                else:
                    gain = nn.init.calculate_gain(nonlinearity)  # type: ignore[arg-type]
                    std = gain / math.sqrt(layer.in_features)
                    nn.init.normal_(layer.weight, 0.0, std)
            elif init == "xavier":
                nn.init.xavier_uniform_(layer.weight, gain=nn.init.calculate_gain(nonlinearity))  # type: ignore[arg-type]
            else:
                raise ValueError(f"unknown init {init!r}")
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out


def param_count(model: nn.Module) -> int:
    """Trainable parameters of a built model (batch-norm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def expected_param_count(
    in_features: int, hidden_layers: Sequence[int], out_features: int, batch_norm: bool = False
) -> int:
    """DESIGN.md's formula: (M+1)·H1 + (H1+1)·H2 + … + (Hk+1)·N, plus 2 per hidden unit with BN."""
    widths = [in_features, *hidden_layers, out_features]
    count = sum((a + 1) * b for a, b in itertools.pairwise(widths))
    return count + (2 * sum(hidden_layers) if batch_norm else 0)


# Attributes Lightning sets on the module around every hook call (several per step), and the
# training loss accumulators set every mini-batch; they are plain values (never a parameter,
# buffer or module), so they can skip nn.Module.__setattr__'s bookkeeping (~3 us a call).
_PLAIN_ATTRS = frozenset(
    {"_current_fx_name", "_current_dataloader_idx", "_results", "_loss_sum", "_loss_count"}
)


def _on_device(batch: Any, device: torch.device) -> bool:
    """Whether a batch (x, y), or an epoch's list of them, already lies on `device`."""
    first = batch[0] if isinstance(batch, list) and batch else batch
    x = first[0] if isinstance(first, tuple | list) and first else first
    return isinstance(x, torch.Tensor) and x.device == device


def lr_factor(
    step: int,
    *,
    schedule: str,
    steps_per_epoch: int,
    max_epochs: int,
    warmup_epochs: int = 0,
    lr_decay: float = 0.9,
    lr_step_epochs: int = 10,
) -> float:
    """The learning rate of a global step as a fraction of `learning_rate` (every schedule but one_cycle).

    A linear warm-up per step over `warmup_epochs`, times the decay of the step's epoch counted from
    the end of the warm-up (e' = epoch - warmup_epochs, over E' = max_epochs - warmup_epochs epochs):
    step: lr_decay ** (e' // lr_step_epochs); exponential: lr_decay ** e'; cosine:
    (1 + cos(pi e' / E')) / 2, which never reaches 0 within training; none: 1.
    """
    warmup_steps = warmup_epochs * steps_per_epoch
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    after = max(0, step // steps_per_epoch - warmup_epochs)
    if schedule == "step":
        decay = lr_decay ** (after // lr_step_epochs)
    elif schedule == "exponential":
        decay = lr_decay**after
    elif schedule == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * after / max(1, max_epochs - warmup_epochs)))
    elif schedule == "none":
        decay = 1.0
    else:
        raise ValueError(f"unknown lr_schedule {schedule!r}")
    return warm * decay


def scheduled_value(epoch: int, *, schedule: str, start: float, final: float, max_epochs: int) -> float:
    """A momentum or L2 value of an epoch: from `start` at epoch 0 to `final` at the last epoch.

    constant: start; linear_decay: a straight line; cosine: half a cosine wave.
    """
    if schedule == "constant" or max_epochs <= 1:
        return start
    t = min(1.0, epoch / (max_epochs - 1))
    if schedule == "linear_decay":
        return start + (final - start) * t
    if schedule == "cosine":
        return final + (start - final) * 0.5 * (1.0 + math.cos(math.pi * t))
    raise ValueError(f"unknown schedule {schedule!r}")


# one_cycle's momentum at the peak learning rate, as a fraction of the momentum it starts and ends
# with: torch's (and fastai's) defaults, 0.85 and 0.95.
ONE_CYCLE_MOMENTUM_RATIO = 0.85 / 0.95
ONE_CYCLE_PCT_START = 0.3


def rising_epochs(values: Mapping[str, Any]) -> int:
    """Epochs in which a trial's learning rate still rises: its warm-up, or one_cycle's first 30%."""
    if values.get("lr_schedule") == "one_cycle":
        return math.ceil(ONE_CYCLE_PCT_START * int(values.get("max_epochs", 30)))
    return int(values.get("warmup_epochs", 0) or 0)


def after_warmup(policy: P, values: Mapping[str, Any]) -> P:
    """The `median` policy for a trial of the built-in model: no stop before its learning rate stops rising.

    Measured on schedule curves (bench/schedule_curves.py, digits): while one_cycle's rate still
    rises, `median` stops the eventual best one_cycle trial in 5 of 11 search orders; waiting for
    the end of the rise keeps it in all. curve_fit keeps the best there without waiting (it would
    train 3-14% more epochs), so it is left as it is.
    """
    epochs = rising_epochs(values)
    min_epochs = getattr(policy, "min_epochs", 0)
    if getattr(policy, "kind", None) != "median" or epochs <= min_epochs:
        return policy
    return dataclasses.replace(policy, min_epochs=epochs)  # type: ignore[type-var]


class MLPModule(pl.LightningModule):
    """Trains an MLP; publishes train_loss, val_loss and val_accuracy / val_rmse once per epoch.

    Built to cost little more than a plain PyTorch loop on tiny models, where Lightning's own
    machinery (~0.3 ms per step here) would otherwise double the cost of the default trial:
    - manual optimisation, and an epoch's mini-batches may arrive as one list (`training_step`
      steps through them), so Lightning's per-step loop runs once per epoch, not once per batch;
    - the training loss is read once a batch (`loss.item()`, which the guard's finiteness check
      needs anyway) and summed as a float, not `self.log`-ged per step;
    - validation is one full-batch forward after each training epoch (`set_validation_data`)
      instead of Lightning's evaluation loop (~4 ms per epoch);
    - the epoch's metrics are published as floats in `epoch_metrics` (`self.log_dict` costs
      ~2.5 ms per call here); the trial's callback reads them together with `callback_metrics`.
    Set `batch_guard` to a callable(batch_idx, loss) to check every mini-batch (interruption,
    time budget, non-finite loss): loss is None before the batch, its float value after.

    Schedules: the learning rate per step (`lr_factor`, or torch's OneCycleLR for `one_cycle`),
    SGD's momentum and the L2 weight decay per epoch (`scheduled_value`); each epoch's starting
    `learning_rate` and `momentum` (Adam: beta1) are published with its metrics.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        task: Task = "classification",
        hidden_layers: Sequence[int] | None = None,
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        init: str = "kaiming",
        optimizer: str = "sgd",
        learning_rate: float = 0.01,
        momentum: float = 0.9,
        l1: float = 0.0,
        l2: float = 0.0,
        warmup_epochs: int = 0,
        steps_per_epoch: int = 1,
        target_std: float = 1.0,
        depth: int | None = None,
        width: int | None = None,
        width_decay: float | None = None,
        max_epochs: int = 30,
        lr_schedule: str = "none",
        lr_decay: float = 0.9,
        lr_step_epochs: int = 10,
        momentum_schedule: str = "constant",
        momentum_final: float = 0.5,
        l2_schedule: str = "constant",
        l2_final: float = 0.0,
        **_ignored: Any,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.hidden_layers = hidden_layer_sizes(hidden_layers, depth, width, width_decay)
        self.model = MLP(in_features, out_features, self.hidden_layers, activation, dropout, batch_norm, init)
        self.task = task
        self.optimizer_name = optimizer
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.l1 = l1
        self.l2 = l2
        self.warmup_epochs = warmup_epochs
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.max_epochs = max(1, max_epochs)
        self.lr_schedule = lr_schedule
        self.lr_decay = lr_decay
        self.lr_step_epochs = max(1, lr_step_epochs)
        self.momentum_schedule = momentum_schedule
        self.momentum_final = momentum_final
        self.l2_schedule = l2_schedule
        self.l2_final = l2_final
        if lr_schedule == "one_cycle" and (warmup_epochs > 0 or momentum_schedule != "constant"):
            raise ValueError(
                "lr_schedule one_cycle has its own warm-up and momentum cycle: "
                "warmup_epochs must be 0 and momentum_schedule constant"
            )
        self._epoch_start: dict[str, float] = {}
        self.target_std = target_std
        self.loss_fn: nn.Module = nn.CrossEntropyLoss() if task == "classification" else nn.MSELoss()
        self._weights = [m.weight for m in self.model.net if isinstance(m, nn.Linear)]
        self._loss_sum = 0.0
        self._loss_count = 0
        self._val: tuple[torch.Tensor, torch.Tensor] | None = None
        self._mixed: Any = None  # the LightningOptimizer, under a mixed precision
        self.epoch_metrics: dict[str, float] = {}
        self.batch_guard: Callable[[int, float | None], None] | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _PLAIN_ATTRS:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        # Batches are already tensors on the CPU, or on the trial's device (the adapter moved the
        # splits there once): skip Lightning's recursive collection walk.
        if device.type == "cpu" or _on_device(batch, device):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def set_validation_data(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """The validation split, scored in one batch after every training epoch."""
        self._val = (x, y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(x)
        return out.squeeze(-1) if self.task == "regression" else out

    def on_train_start(self) -> None:
        opt = self.optimizers(use_pl_optimizer=False)
        assert isinstance(opt, torch.optim.Optimizer)
        schedules = self.lr_schedulers()
        schedule = schedules[0] if isinstance(schedules, list) else schedules
        self._opt: tuple[torch.optim.Optimizer, Any] = (opt, schedule)
        self._mixed = None if self.trainer.precision == "32-true" else self.optimizers()

    def on_train_epoch_start(self) -> None:
        self._loss_sum = 0.0
        self._loss_count = 0
        self.apply_epoch_schedules(self.trainer.current_epoch, self._opt[0])

    def apply_epoch_schedules(self, epoch: int, opt: torch.optim.Optimizer) -> None:
        """Set the epoch's momentum (SGD) and weight decay, and note the values it starts with."""
        decayed = opt.param_groups[0]  # the weights; the other group (biases, BN) never decays
        if self.l2_schedule != "constant":
            decayed["weight_decay"] = scheduled_value(
                epoch,
                schedule=self.l2_schedule,
                start=self.l2,
                final=self.l2_final,
                max_epochs=self.max_epochs,
            )
        if self.momentum_schedule != "constant" and "momentum" in opt.defaults:
            momentum = scheduled_value(
                epoch,
                schedule=self.momentum_schedule,
                start=self.momentum,
                final=self.momentum_final,
                max_epochs=self.max_epochs,
            )
            for group in opt.param_groups:
                group["momentum"] = momentum
        self._epoch_start = {
            "learning_rate": float(decayed["lr"]),
            "momentum": float(decayed["momentum"] if "momentum" in decayed else decayed["betas"][0]),
        }

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if isinstance(batch, list):  # a whole epoch of (x, y) mini-batches
            loss = torch.zeros(())
            for i, (x, y) in enumerate(batch):
                loss = self._step(x, y, i)
            return loss
        x, y = batch
        return self._step(x, y, batch_idx)

    def _step(self, x: torch.Tensor, y: torch.Tensor, batch_idx: int) -> torch.Tensor:
        guard = self.batch_guard
        if guard is not None:
            guard(batch_idx, None)
        loss: torch.Tensor = self.loss_fn(self(x), y)
        # One read a batch for the guard and the epoch's mean: three tensor ops fewer a batch
        # than summing on a tensor (each op gives up the GIL, to the writer's and Prefect's threads).
        value = loss.item()
        if guard is not None:
            guard(batch_idx, value)
        self._loss_sum += value * len(y)
        self._loss_count += len(y)
        if self.l1 > 0:
            loss = loss + self.l1 * sum(w.abs().sum() for w in self._weights)
        opt, schedule = self._opt
        # opt.zero_grad(set_to_none=True) does this inside a profiler record (two torch ops, ~7 us
        # a batch; each op gives up the GIL in a study)
        for group in opt.param_groups:
            for p in group["params"]:
                p.grad = None
        if self._mixed is None:
            # Plain backward: fp32 needs none of manual_backward's precision/strategy layers.
            loss.backward()
            opt.step()
        else:
            # Mixed precision: Lightning's plugin scales the loss (16-mixed) and steps through its scaler.
            self.manual_backward(loss)
            self._mixed.step()
        if schedule is not None:
            schedule.step()
        return loss.detach()

    def validation_metrics(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """val_loss and val_accuracy (classification) or val_rmse (regression, original units)."""
        out = self(x)
        loss = self.loss_fn(out, y)
        metrics = {"val_loss": loss}
        if self.task == "classification":
            metrics["val_accuracy"] = (out.argmax(dim=1) == y).float().mean()
        else:
            metrics["val_rmse"] = loss.sqrt() * self.target_std
        return metrics

    def on_train_epoch_end(self) -> None:
        metrics: dict[str, torch.Tensor | float] = {}
        if self._loss_count:
            metrics["train_loss"] = self._loss_sum / self._loss_count
        if self._val is not None:
            was_training = self.training
            self.eval()
            with torch.no_grad():
                metrics.update(self.validation_metrics(*self._val))
            self.train(was_training)
        self.epoch_metrics = {k: float(v) for k, v in metrics.items()}
        self.epoch_metrics.update(self._epoch_start)

    def make_optimizer(self) -> torch.optim.Optimizer:
        """The optimizer at the configured values, weight decay on the weights only; no schedule."""
        decay = [p for n, p in self.model.named_parameters() if n.endswith("weight") and p.ndim > 1]
        other = [p for n, p in self.model.named_parameters() if not (n.endswith("weight") and p.ndim > 1)]
        groups = [
            {"params": decay, "weight_decay": self.l2},
            {"params": other, "weight_decay": 0.0},
        ]
        if self.optimizer_name == "sgd":
            return torch.optim.SGD(groups, lr=self.learning_rate, momentum=self.momentum)
        if self.optimizer_name == "adam":
            return torch.optim.Adam(groups, lr=self.learning_rate)
        if self.optimizer_name == "adamw":
            return torch.optim.AdamW(groups, lr=self.learning_rate)
        raise ValueError(f"unknown optimizer {self.optimizer_name!r}")

    def configure_optimizers(self) -> Any:
        opt = self.make_optimizer()
        schedule: torch.optim.lr_scheduler.LRScheduler
        if self.lr_schedule == "one_cycle":
            top = self.momentum if "momentum" in opt.defaults else float(opt.defaults["betas"][0])
            schedule = torch.optim.lr_scheduler.OneCycleLR(
                opt,
                max_lr=self.learning_rate,
                total_steps=self.max_epochs * self.steps_per_epoch,
                pct_start=ONE_CYCLE_PCT_START,
                base_momentum=top * ONE_CYCLE_MOMENTUM_RATIO,
                max_momentum=top,
            )
        elif self.lr_schedule == "none" and self.warmup_epochs <= 0:
            return opt  # a constant rate: no per-step scheduler call at all
        else:
            factor = functools.partial(
                lr_factor,
                schedule=self.lr_schedule,
                steps_per_epoch=self.steps_per_epoch,
                max_epochs=self.max_epochs,
                warmup_epochs=self.warmup_epochs,
                lr_decay=self.lr_decay,
                lr_step_epochs=self.lr_step_epochs,
            )
            schedule = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class ScoringModel(nn.Module):
    """What is exported as `best_model`: raw features in, class scores (logits) or values out.

    The train-set standardisation (and, for regression, the target scaling) is baked in, so a user
    scores raw rows. Both are computed in float64, the rows' own precision: a column far from zero
    (epoch seconds near 1.6e9, where float32 steps by 128) keeps its differences; only the
    standardised values enter the float32 network.
    """

    def __init__(
        self,
        net: nn.Module,
        feature_mean: torch.Tensor,
        feature_std: torch.Tensor,
        task: Task,
        target_mean: float = 0.0,
        target_std: float = 1.0,
    ) -> None:
        super().__init__()
        self.net = net
        self.task = task
        self.feature_mean: torch.Tensor
        self.feature_std: torch.Tensor
        self.register_buffer("feature_mean", feature_mean.double().clone())
        self.register_buffer("feature_std", feature_std.double().clone())
        self.target_mean = float(target_mean)
        self.target_std = float(target_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = ((x.double() - self.feature_mean) / self.feature_std).float()
        out: torch.Tensor = self.net(z)
        if self.task == "regression":
            return out.squeeze(-1).double() * self.target_std + self.target_mean
        return out
