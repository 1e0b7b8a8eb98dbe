"""The built-in model: a plain MLP (nn.Module), the LightningModule that trains it, param_count."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import nn

__all__ = [
    "MLP",
    "MLPModule",
    "ScoringModel",
    "expected_param_count",
    "param_count",
]

Task = Literal["classification", "regression"]

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


class MLPModule(pl.LightningModule):
    """Trains an MLP; publishes train_loss, val_loss and val_accuracy / val_rmse once per epoch.

    Built to cost little more than a plain PyTorch loop on tiny models, where Lightning's own
    machinery (~0.3 ms per step here) would otherwise double the cost of the default trial:
    - manual optimisation, and an epoch's mini-batches may arrive as one list (`training_step`
      steps through them), so Lightning's per-step loop runs once per epoch, not once per batch;
    - the training loss is summed on a tensor, not `self.log`-ged per step;
    - validation is one full-batch forward after each training epoch (`set_validation_data`)
      instead of Lightning's evaluation loop (~4 ms per epoch);
    - the epoch's metrics are published as floats in `epoch_metrics` (`self.log_dict` costs
      ~2.5 ms per call here); the trial's callback reads them together with `callback_metrics`.
    Set `batch_guard` to a callable(batch_idx, loss) to check every mini-batch (interruption,
    time budget, non-finite loss).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        task: Task = "classification",
        hidden_layers: Sequence[int] = (128, 64),
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
        **_ignored: Any,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.model = MLP(
            in_features, out_features, list(hidden_layers), activation, dropout, batch_norm, init
        )
        self.task = task
        self.optimizer_name = optimizer
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.l1 = l1
        self.l2 = l2
        self.warmup_epochs = warmup_epochs
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.target_std = target_std
        self.loss_fn: nn.Module = nn.CrossEntropyLoss() if task == "classification" else nn.MSELoss()
        self._weights = [m.weight for m in self.model.net if isinstance(m, nn.Linear)]
        self._loss_sum = torch.zeros(())
        self._loss_count = 0
        self._val: tuple[torch.Tensor, torch.Tensor] | None = None
        self.epoch_metrics: dict[str, float] = {}
        self.batch_guard: Callable[[int, torch.Tensor | None], None] | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _PLAIN_ATTRS:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        # Batches are already tensors on the CPU; skip Lightning's recursive collection walk.
        if device.type == "cpu":
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

    def on_train_epoch_start(self) -> None:
        self._loss_sum = torch.zeros((), device=self.device)
        self._loss_count = 0

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
        if guard is not None:
            guard(batch_idx, loss)
        self._loss_sum += loss.detach() * len(y)
        self._loss_count += len(y)
        if self.l1 > 0:
            loss = loss + self.l1 * sum(w.abs().sum() for w in self._weights)
        opt, schedule = self._opt
        opt.zero_grad(set_to_none=True)
        # Plain backward: fp32 on the CPU needs none of manual_backward's precision/strategy layers.
        loss.backward()
        opt.step()
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
        metrics: dict[str, torch.Tensor] = {}
        if self._loss_count:
            metrics["train_loss"] = self._loss_sum / self._loss_count
        if self._val is not None:
            was_training = self.training
            self.eval()
            with torch.no_grad():
                metrics.update(self.validation_metrics(*self._val))
            self.train(was_training)
        self.epoch_metrics = {k: float(v) for k, v in metrics.items()}

    def configure_optimizers(self) -> Any:
        decay = [p for n, p in self.model.named_parameters() if n.endswith("weight") and p.ndim > 1]
        other = [p for n, p in self.model.named_parameters() if not (n.endswith("weight") and p.ndim > 1)]
        groups = [
            {"params": decay, "weight_decay": self.l2},
            {"params": other, "weight_decay": 0.0},
        ]
        opt: torch.optim.Optimizer
        if self.optimizer_name == "sgd":
            opt = torch.optim.SGD(groups, lr=self.learning_rate, momentum=self.momentum)
        elif self.optimizer_name == "adam":
            opt = torch.optim.Adam(groups, lr=self.learning_rate)
        elif self.optimizer_name == "adamw":
            opt = torch.optim.AdamW(groups, lr=self.learning_rate)
        else:
            raise ValueError(f"unknown optimizer {self.optimizer_name!r}")
        if self.warmup_epochs <= 0:
            return opt
        warmup_steps = self.warmup_epochs * self.steps_per_epoch
        # Linear warm-up per step, from lr/warmup_steps up to lr, then constant.
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class ScoringModel(nn.Module):
    """What is exported as `best_model`: raw features in, class scores (logits) or values out.

    The train-set standardisation (and, for regression, the target scaling) is baked in, so a user
    scores raw rows.
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
        self.register_buffer("feature_mean", feature_mean.float().clone())
        self.register_buffer("feature_std", feature_std.float().clone())
        self.target_mean = float(target_mean)
        self.target_std = float(target_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.feature_mean) / self.feature_std
        out: torch.Tensor = self.net(z)
        if self.task == "regression":
            return out.squeeze(-1) * self.target_std + self.target_mean
        return out
