"""What a study records of its config: `config.yaml`, the flattened params, the hash that finds it again."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml
from pydantic import BaseModel

from hyperflow.components.architecture import DEFAULT_HIDDEN_LAYERS
from hyperflow.components.config import ExperimentConfig

__all__ = ["config_hash", "config_yaml", "flatten", "legacy_config_hash"]


def config_yaml(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML (what `config.yaml` of the study run holds)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts with dots: {'model': {'optimizer': 'sgd'}} -> {'model.optimizer': 'sgd'}."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    out: dict[str, Any] = {}
    if isinstance(value, dict) and value:
        for key, child in value.items():
            out.update(flatten(child, f"{prefix}.{key}" if prefix else str(key)))
    else:
        out[prefix] = value
    return out


# Fields that change how long or where a study runs, not what it is: excluded from the hash so
# that `--resume` and `--n-trials` find the same study.
_HASH_EXCLUDED = {
    "search.n_trials",
    "search.n_parallel",
    "search.max_failures",
    "search.timeout_minutes",
    "tracking.uri",
    "tracking.register_model",
    "tracking.promote",
    "runner.kind",
    "runner.address",
}
# What the first version left out, frozen: `legacy_config_hash` must give what it recorded.
_LEGACY_EXCLUDED = frozenset(_HASH_EXCLUDED)
_HASH_EXCLUDED |= {"runner.accelerator", "runner.gpus_per_trial", "tracking.weight_summary_every"}


def config_hash(cfg: ExperimentConfig) -> str:
    """A short stable hash of what defines the study (not its budget or where it runs).

    Only values that differ from their defaults count, at every level (a dimension's `log: false`
    as much as `model.dropout`), so that a key added to the schema later, with a default, leaves
    the hash of every recorded study as it was.
    """
    flat = flatten(cfg.model_dump(mode="json", exclude_defaults=True))
    if flat.get("model.hidden_layers") == list(DEFAULT_HIDDEN_LAYERS):
        # [128, 64] was hidden_layers' default before it could be left unset: the same study.
        del flat["model.hidden_layers"]
    # gp_hedge was search.bayes.acquisition's default before logEI: a recorded study keeps its
    # hash, and a logEI study (the default now) gets one of its own.
    if flat.get("search.bayes.acquisition") == "gp_hedge":
        del flat["search.bayes.acquisition"]
    elif "search.bayes.acquisition" not in flat:
        flat["search.bayes.acquisition"] = "logEI"
    # worst was search.bayes.pruned's default before predicted: a recorded study keeps its hash,
    # and a study under the new default gets one of its own where the key is read (bayes, GP,
    # logEI); every other study ignores it and keeps its hash.
    bayes = cfg.search.bayes
    if flat.get("search.bayes.pruned") == "worst":
        del flat["search.bayes.pruned"]
    elif "search.bayes.pruned" not in flat and (
        cfg.search.strategy == "bayes" and bayes.surrogate == "GP" and bayes.acquisition == "logEI"
    ):
        flat["search.bayes.pruned"] = "predicted"
    # An empty section flattens to {"": {}} or {"model.args": {}}: nothing that defines a study.
    return _hash_flat({k: v for k, v in flat.items() if v != {}})


def legacy_config_hash(recorded: dict[str, Any]) -> str:
    """The hash studies recorded before 0.2 carry: every key of their `config.yaml`, defaults included."""
    return _hash_flat(flatten(recorded), _LEGACY_EXCLUDED)


def _hash_flat(flat: dict[str, Any], excluded: frozenset[str] | set[str] = _HASH_EXCLUDED) -> str:
    kept = {k: v for k, v in flat.items() if k not in excluded}
    blob = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
