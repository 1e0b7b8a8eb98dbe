"""The built-in MLP, its LightningModule and param_count."""

from __future__ import annotations

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
    expected = net((raw - mean) / std).squeeze(-1) * 5.0 + 100.0
    assert torch.allclose(scorer(raw), expected)
