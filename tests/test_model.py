"""The built-in MLP, its LightningModule and param_count."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch

from hyperflow.components.model import MLP, MLPModule, ScoringModel, expected_param_count, param_count


@pytest.mark.parametrize(
    ("inputs", "hidden", "outputs"),
    [(64, [128, 64], 10), (30, [8], 2), (10, [5, 5, 5], 1), (4, [], 3), (13, [256, 128, 64], 3)],
)
@pytest.mark.parametrize("batch_norm", [False, True])
def test_param_count_matches_the_formula(
    inputs: int, hidden: list[int], outputs: int, batch_norm: bool
) -> None:
    model = MLP(inputs, outputs, hidden, batch_norm=batch_norm, dropout=0.2)
    widths = [inputs, *hidden, outputs]
    by_hand = sum((widths[i] + 1) * widths[i + 1] for i in range(len(widths) - 1))
    by_hand += 2 * sum(hidden) if batch_norm else 0
    assert param_count(model) == by_hand == expected_param_count(inputs, hidden, outputs, batch_norm)


def test_layers_follow_the_config() -> None:
    model = MLP(8, 3, [16, 4], activation="tanh", dropout=0.5, batch_norm=True)
    kinds = [type(m).__name__ for m in model.net]
    assert kinds == [
        "Linear", "BatchNorm1d", "Tanh", "Dropout",
        "Linear", "BatchNorm1d", "Tanh", "Dropout",
        "Linear",
    ]  # fmt: skip
    plain = MLP(8, 3, [16], activation="gelu")
    assert [type(m).__name__ for m in plain.net] == ["Linear", "GELU", "Linear"]


@pytest.mark.parametrize("init", ["kaiming", "xavier", "default"])
def test_inits_give_different_weight_scales(init: str) -> None:
    torch.manual_seed(0)
    model = MLP(256, 10, [256], init=init)
    first = model.net[0]
    assert isinstance(first, torch.nn.Linear)
    std = float(first.weight.detach().std())
    expected = {
        "kaiming": (2 / 256) ** 0.5,
        "xavier": (2 / 512) ** 0.5 * 2**0.5,
        "default": (1 / 256 / 3) ** 0.5,
    }
    assert std == pytest.approx(expected[init], rel=0.1)
    if init != "default":
        assert float(first.bias.detach().abs().sum()) == 0.0


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_optimizers_and_weight_decay_on_weights_only(optimizer: str) -> None:
    module = MLPModule(4, 2, hidden_layers=[3], optimizer=optimizer, learning_rate=0.05, l2=0.01)
    opt = module.configure_optimizers()
    assert type(opt).__name__.lower() == optimizer
    decayed, other = opt.param_groups
    assert decayed["weight_decay"] == 0.01 and other["weight_decay"] == 0.0
    assert all(p.ndim == 2 for p in decayed["params"])
    assert all(p.ndim == 1 for p in other["params"])
    assert opt.param_groups[0]["lr"] == 0.05


def test_warmup_is_linear_per_step() -> None:
    module = MLPModule(4, 2, hidden_layers=[3], learning_rate=0.1, warmup_epochs=2, steps_per_epoch=5)
    conf = module.configure_optimizers()
    opt, schedule = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    assert lrs[0] == pytest.approx(0.01)
    assert lrs[4] == pytest.approx(0.05)
    assert lrs[9:] == pytest.approx([0.1, 0.1, 0.1])


def test_l1_penalty_is_added_to_the_training_loss() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    base = MLPModule(4, 2, hidden_layers=[3])
    penalised = MLPModule(4, 2, hidden_layers=[3], l1=0.5)
    penalised.load_state_dict(base.state_dict())
    for m in (base, penalised):
        m._opt = (torch.optim.SGD(m.parameters(), lr=0.0), None)
    plain_loss = float(base._step(x, y, 0))
    l1 = sum(float(w.detach().abs().sum()) for w in penalised._weights)
    assert float(penalised._step(x, y, 0)) == pytest.approx(plain_loss + 0.5 * l1, rel=1e-5)


def test_scoring_model_takes_raw_features() -> None:
    torch.manual_seed(0)
    net = MLP(3, 1, [4])
    mean, std = torch.tensor([10.0, 20.0, 30.0]), torch.tensor([2.0, 4.0, 8.0])
    scorer = ScoringModel(net, mean, std, "regression", target_mean=100.0, target_std=5.0).eval()
    raw = torch.tensor([[12.0, 16.0, 38.0]])
    expected = net((raw - mean) / std).squeeze(-1).double() * 5.0 + 100.0
    assert torch.allclose(scorer(raw), expected)
    # The scaling runs in float64: a column near 1.6e9 (epoch seconds) keeps differences of a second,
    # which float32 (steps of 128 there) would erase before the subtraction.
    scorer = ScoringModel(net, torch.tensor([1.6e9, 0.0, 0.0], dtype=torch.float64), std, "regression")
    near = torch.tensor([[1.6e9 + 1.0, 0.0, 0.0], [1.6e9 + 3.0, 0.0, 0.0]], dtype=torch.float64)
    z = torch.tensor([[0.5, 0.0, 0.0], [1.5, 0.0, 0.0]])
    assert torch.allclose(scorer(near), net(z).squeeze(-1).double())


# --------------------------------------------------------------------------------------------
# Schedules: read back from the optimizer at the first mini-batch of every epoch

EPOCHS, STEPS = 6, 4  # 40 rows in batches of 10


def optimizer_by_epoch(**kwargs: Any) -> list[dict[str, float]]:
    """Train a tiny MLPModule with a real Trainer; the optimizer's values at each epoch's first step."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import Callback

    from hyperflow.components.batches import TensorBatches

    torch.manual_seed(0)
    x, y = torch.randn(40, 4), torch.randint(0, 2, (40,))
    module = MLPModule(4, 2, hidden_layers=[3], steps_per_epoch=STEPS, max_epochs=EPOCHS, **kwargs)
    seen: list[dict[str, float]] = []

    class ReadOptimizer(Callback):
        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            opt = trainer.optimizers[0]
            weights, others = opt.param_groups
            momentum = weights["momentum"] if "momentum" in weights else weights["betas"][0]
            seen.append(
                {
                    "lr": weights["lr"],
                    "momentum": momentum,
                    "weight_decay": weights["weight_decay"],
                    "bias_weight_decay": others["weight_decay"],
                    "others_lr": others["lr"],
                }
            )

    trainer = pl.Trainer(
        max_epochs=EPOCHS,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[ReadOptimizer()],
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a trial trains; a tiny model's backward pass is 30x slower on 2
    try:
        trainer.fit(module, train_dataloaders=TensorBatches(x, y, 10, shuffle=True, per_epoch=False))
    finally:
        torch.set_num_threads(threads)
    assert len(seen) == EPOCHS * STEPS
    assert all(s["lr"] == s["others_lr"] for s in seen)  # one rate for both parameter groups
    logged = module.epoch_metrics  # the last epoch's, as the trial callback gets them
    assert logged["learning_rate"] == pytest.approx(seen[-STEPS]["lr"])
    assert logged["momentum"] == pytest.approx(seen[-STEPS]["momentum"])
    return seen[::STEPS]


LR = 0.1


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        pytest.param({}, [LR] * EPOCHS, id="none"),
        pytest.param(
            {"lr_schedule": "step", "lr_decay": 0.5, "lr_step_epochs": 2},
            [LR, LR, LR / 2, LR / 2, LR / 4, LR / 4],
            id="step",
        ),
        pytest.param(
            {"lr_schedule": "exponential", "lr_decay": 0.5},
            [LR * 0.5**e for e in range(EPOCHS)],
            id="exponential",
        ),
        pytest.param(
            {"lr_schedule": "cosine"},
            [LR * 0.5 * (1 + math.cos(math.pi * e / EPOCHS)) for e in range(EPOCHS)],
            id="cosine",
        ),
        # warm-up per step over 2 epochs (8 steps), then the decay counts epochs from its end
        pytest.param(
            {"lr_schedule": "exponential", "lr_decay": 0.5, "warmup_epochs": 2},
            [LR * 1 / 8, LR * 5 / 8, LR, LR / 2, LR / 4, LR / 8],
            id="warmup+exponential",
        ),
        pytest.param(
            {"lr_schedule": "cosine", "warmup_epochs": 2},
            [LR / 8, LR * 5 / 8] + [LR * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)],
            id="warmup+cosine",
        ),
    ],
)
def test_each_lr_schedule_sets_the_rate_of_every_epoch(
    settings: dict[str, Any], expected: list[float]
) -> None:
    seen = optimizer_by_epoch(learning_rate=LR, **settings)
    assert [s["lr"] for s in seen] == pytest.approx(expected)
    assert all(s["momentum"] == 0.9 for s in seen)


def test_one_cycle_warms_up_peaks_anneals_and_cycles_momentum_inversely() -> None:
    seen = optimizer_by_epoch(learning_rate=LR, momentum=0.9, lr_schedule="one_cycle")
    lrs, moms = [s["lr"] for s in seen], [s["momentum"] for s in seen]
    assert lrs[0] == pytest.approx(LR / 25)  # torch's div_factor
    peak = lrs.index(max(lrs))
    assert 0 < peak < EPOCHS - 1 and max(lrs) <= LR
    assert lrs[: peak + 1] == sorted(lrs[: peak + 1]) and lrs[peak:] == sorted(lrs[peak:], reverse=True)
    assert lrs[-1] < LR / 10
    assert moms[0] == pytest.approx(0.9)  # model.momentum at the ends, 0.85/0.95 of it at the peak rate
    assert moms.index(min(moms)) == peak and min(moms) >= 0.9 * 0.85 / 0.95 - 1e-9


@pytest.mark.parametrize(
    ("schedule", "shape"),
    [
        ("constant", lambda t: 0.0),
        ("linear_decay", lambda t: t),
        ("cosine", lambda t: 0.5 * (1 - math.cos(math.pi * t))),
    ],
)
def test_momentum_and_l2_schedules_go_from_their_value_to_the_final_one(schedule: str, shape: Any) -> None:
    seen = optimizer_by_epoch(
        learning_rate=LR,
        momentum=0.9,
        momentum_schedule=schedule,
        momentum_final=0.5,
        l2=0.01,
        l2_schedule=schedule,
        l2_final=0.001,
    )
    t = [e / (EPOCHS - 1) for e in range(EPOCHS)]
    assert [s["momentum"] for s in seen] == pytest.approx([0.9 + (0.5 - 0.9) * shape(x) for x in t])
    assert [s["weight_decay"] for s in seen] == pytest.approx([0.01 + (0.001 - 0.01) * shape(x) for x in t])
    assert all(s["bias_weight_decay"] == 0.0 for s in seen)  # biases never decay
    assert all(s["lr"] == LR for s in seen)


def test_adam_logs_beta1_as_its_momentum() -> None:
    seen = optimizer_by_epoch(
        learning_rate=0.01, optimizer="adam", lr_schedule="step", lr_step_epochs=3, lr_decay=0.1
    )
    assert [s["lr"] for s in seen] == pytest.approx([0.01] * 3 + [0.001] * 3)
    assert all(s["momentum"] == 0.9 for s in seen)


def test_the_trial_records_learning_rate_and_momentum_per_epoch() -> None:
    from hyperflow.components.config import validate_config
    from hyperflow.components.data import load_dataset
    from hyperflow.components.training import train_trial
    from hyperflow.components.trial import TrialSpec

    cfg = validate_config(
        {
            "data": {"source": "iris"},
            "model": {
                "hidden_layers": [8],
                "max_epochs": 4,
                "learning_rate": 0.2,
                "lr_schedule": "exponential",
                "lr_decay": 0.5,
                "momentum_schedule": "linear_decay",
                "momentum_final": 0.6,
            },
            "search": {"metric": "val_accuracy"},
        }
    )
    result = train_trial(load_dataset(cfg.data, 0), {}, TrialSpec.from_config(cfg, num_threads=1), seed=0)
    assert result.state == "completed"
    assert result.history["learning_rate"] == pytest.approx([0.2, 0.1, 0.05, 0.025])
    assert result.history["momentum"] == pytest.approx([0.9, 0.8, 0.7, 0.6])


# --------------------------------------------------------------------------------------------
# Depth and width


@pytest.mark.parametrize(
    ("depth", "width", "decay"),
    [
        (1, 32, None),
        (3, 100, 0.5),
        (4, 64, 0.7),
        (2, None, None),
        (None, 48, None),
        (3, 10, 1.0),
        (5, 8, 0.3),
        (0, 7, 1.0),
    ],
)
def test_depth_and_width_build_the_layers_the_formula_gives(
    depth: int | None, width: int | None, decay: float | None
) -> None:
    module = MLPModule(64, 10, depth=depth, width=width, width_decay=decay)
    d, w, r = 2 if depth is None else depth, 128 if width is None else width, 0.5 if decay is None else decay
    hidden = [max(1, math.floor(w * r**i + 0.5)) for i in range(d)]
    linears = [m for m in module.model.net if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [*hidden, 10]
    widths = [64, *hidden, 10]
    assert param_count(module) == sum((a + 1) * b for a, b in itertools.pairwise(widths))


def test_depth_and_width_through_the_config_and_build_module() -> None:
    from hyperflow.components.config import validate_config
    from hyperflow.components.data import load_dataset
    from hyperflow.components.training import build_module
    from hyperflow.components.trial import TrialSpec

    cfg = validate_config(
        {
            "model": {"depth": 3, "width": 96},
            "search": {"space": {"width_decay": {"low": 0.25, "high": 1.0}, "depth": {"low": 1, "high": 4}}},
        }
    )
    data = load_dataset(cfg.data, 0)
    spec = TrialSpec.from_config(cfg)
    module = build_module(data, {"width_decay": 0.25, "depth": 4}, spec)
    assert param_count(module) == expected_param_count(64, [96, 24, 6, 2], 10)
    default = build_module(data, {}, TrialSpec.from_config(validate_config({})))
    assert param_count(default) == expected_param_count(64, [128, 64], 10)


def test_median_waits_for_the_end_of_the_rise_of_the_learning_rate() -> None:
    from hyperflow.components.curves import StopPolicy
    from hyperflow.components.model import after_warmup, rising_epochs

    assert rising_epochs({"lr_schedule": "one_cycle", "max_epochs": 30}) == 9  # the first 30% of the epochs
    assert rising_epochs({"lr_schedule": "cosine", "warmup_epochs": 4}) == 4
    assert rising_epochs({}) == 0
    completed = tuple(tuple(0.5 + 0.01 * e for e in range(30)) for _ in range(3))
    median = StopPolicy("median", "val_accuracy", "max", min_epochs=5, best=0.79, completed=completed)
    slow = [0.1] * 12  # far below the completed trials at every epoch
    waiting = after_warmup(median, {"lr_schedule": "one_cycle", "max_epochs": 30})
    assert median.check(slow[:5], 29) is not None  # the plain rule stops it at epoch 4
    assert [waiting.check(slow[:n], 29) is None for n in (5, 8, 9)] == [True, True, False]
    assert after_warmup(median, {"lr_schedule": "none"}) is median
    curve_fit = StopPolicy("curve_fit", "val_accuracy", "max", min_epochs=5, best=0.79)
    assert after_warmup(curve_fit, {"lr_schedule": "one_cycle", "max_epochs": 30}) is curve_fit
