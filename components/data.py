"""Data sets: the raw features (datafiles.py) split by seed and prepared (preparation.py) on the train split."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from hyperflow.components.config import BUILTIN_TASKS, DataConfig
from hyperflow.components.datafiles import DataError, RawData, load_raw
from hyperflow.components.preparation import Preparation, categorical_columns, fit_preparation

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "AUTO_MAX_CLASSES",
    "AUTO_MIN_ROWS_PER_CLASS",
    "DataError",
    "Dataset",
    "load_arrays",
    "load_dataset",
]

Task = Literal["classification", "regression"]

# task `auto` on a file: numeric labels are a classification only when they are whole numbers
# taking at most AUTO_MAX_CLASSES distinct values, with at least AUTO_MIN_ROWS_PER_CLASS rows per
# value on average. Labels that are strings, booleans or categories are always a classification.
AUTO_MAX_CLASSES = 20
AUTO_MIN_ROWS_PER_CLASS = 5


@dataclass(frozen=True, eq=False)
class Dataset:
    """A data set split into train/val/test and prepared with what the train split holds.

    Features are prepared by `preparation`: gaps filled, categorical columns one-hot encoded,
    everything standardised with the train statistics (one-hot columns are left 0/1).

    Attributes:
        name: the built-in set's name (`digits`) or the file's stem.
        source: `sklearn.datasets.load_digits`, or the file's absolute path.
        task: `classification` or `regression`.
        X_train: float32 prepared features (`feature_names`), standardised with the train mean and std.
        y_train: int64 class indices (classification) or float32 targets standardised with the
            train mean and std (regression).
        X_val: as X_train, for the validation split.
        y_val: as y_train, for the validation split.
        X_test: as X_train, for the held-out test split.
        y_test: as y_train, for the held-out test split.
        feature_names: one name per prepared feature column (`island_Dream` for a one-hot column).
        classes: the label of each class id as a string (classification), else None.
        feature_mean: float64 per-feature train mean (0 for a one-hot column).
        feature_std: float64 per-feature train std (1 for a constant or one-hot feature).
        target_mean: the train target mean (regression); 0.0 for a classification.
        target_std: the train target std (regression); 1.0 for a classification.
        digest: a short sha256 over the raw features and labels, stable across runs.
        preparation: the fitted preparation (its `spec` is what the served model applies).
        test_rows: the raw feature rows of the test split, as read (strings and gaps included).
        labels: the original label value of each class id (numbers, booleans or strings).
    """

    name: str
    source: str
    task: Task
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    feature_names: list[str]
    classes: list[str] | None
    feature_mean: np.ndarray
    feature_std: np.ndarray
    target_mean: float
    target_std: float
    digest: str
    preparation: Preparation | None = None
    test_rows: pd.DataFrame | None = None
    labels: list[Any] | None = None

    @property
    def n_features(self) -> int:
        """The number of feature columns."""
        return int(self.X_train.shape[1])

    @property
    def n_outputs(self) -> int:
        """The number of classes, or 1 for a regression."""
        return len(self.classes) if self.classes is not None else 1

    def raw_features(self, X: np.ndarray) -> np.ndarray:
        """Undo the standardisation of features: filled values in the units of the source, one-hot 0/1."""
        return np.asarray(X, dtype=np.float64) * self.feature_std + self.feature_mean

    def raw_targets(self, y: np.ndarray) -> np.ndarray:
        """Undo the standardisation of regression targets (the identity for a classification)."""
        if self.task == "classification":
            return np.asarray(y)
        return np.asarray(y, dtype=np.float64) * self.target_std + self.target_mean

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary: name, source, task, digest, rows per split, features, outputs."""
        return {
            "name": self.name,
            "source": self.source,
            "task": self.task,
            "digest": self.digest,
            "n_rows": {
                "train": len(self.y_train),
                "val": len(self.y_val),
                "test": len(self.y_test),
            },
            "n_features": self.n_features,
            "n_outputs": self.n_outputs,
            "classes": list(self.classes) if self.classes is not None else None,
        }


# --------------------------------------------------------------------------------------------
# Public entry points


def load_arrays(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, list[str], str, str]:
    """Load the raw data named by the config, before any splitting or scaling.

    Args:
        cfg: the `data` section of the config.

    Returns:
        `(X, y, feature_names, name, source)`: X as a 2-D array (float64 when every column is a
        number, else objects; gaps as NaN), y as a 1-D array of the original labels (numbers,
        booleans or strings), the feature names, the data set's name and its source (the
        scikit-learn loader or the file's absolute path).

    Raises:
        DataError: the file is missing, unreadable or holds unusable values.
    """
    raw = load_raw(cfg)
    return raw.X.to_numpy(copy=True), raw.y.copy(), list(raw.feature_names), raw.name, raw.source


def load_dataset(cfg: DataConfig, seed: int) -> Dataset:
    """Load, split (stratified for a classification) and standardise a data set.

    Args:
        cfg: the `data` section of the config.
        seed: seeds the split; the same seed gives the same split.

    Returns:
        The split and standardised data set.

    The last data set loaded is kept: a run checks its data before any run exists (preflight) and
    then trains on it (the flow's prepare-data), and the file is read once. A file that changed
    in between (size or modification time) is read again.

    Raises:
        DataError: the data cannot be loaded, the task does not fit the labels, or the split would
            leave a split empty; the message names the config field or the file.
    """
    return _load_dataset(cfg.model_dump_json(), seed, _file_identity(cfg))


@functools.lru_cache(maxsize=1)
def _load_dataset(cfg_json: str, seed: int, file_identity: tuple[str, int, int] | None) -> Dataset:
    return _split_and_scale(DataConfig.model_validate_json(cfg_json), seed)


def _file_identity(cfg: DataConfig) -> tuple[str, int, int] | None:
    if cfg.source != "file" or not cfg.path:
        return None
    try:
        stat = Path(cfg.path).expanduser().resolve().stat()
    except OSError:
        return None
    return (str(Path(cfg.path).expanduser().resolve()), stat.st_size, stat.st_mtime_ns)


def _split_and_scale(cfg: DataConfig, seed: int) -> Dataset:
    raw = load_raw(cfg)
    task = _resolve_task(raw, cfg.task)
    rng = np.random.default_rng(seed)
    n = len(raw.y)
    n_val, n_test = _split_sizes(n, cfg.val_fraction, cfg.test_fraction, raw)

    classes: list[str] | None = None
    if task == "classification":
        y_all, classes = _encode_labels(raw)
        train, val, test = _stratified_split(y_all, classes, n_val, n_test, raw, rng)
    else:
        y_all = raw.y.astype(np.float64)
        order = rng.permutation(n)
        test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]

    X = raw.X
    prep = fit_preparation(
        X.iloc[train],
        categorical=categorical_columns(X, cfg.categorical),
        layout="table" if raw.layout == "table" else "array",
        n_missing={str(c): int(v) for c, v in X.isna().sum().items()},
        missing=cfg.missing,
    )

    prepared = prep.transform(X)

    def scale(rows: np.ndarray) -> np.ndarray:
        return prepared[rows]

    if task == "classification":
        target_mean, target_std = 0.0, 1.0
        ys = [y_all[rows].astype(np.int64) for rows in (train, val, test)]
    else:
        target_mean = float(y_all[train].mean())
        target_std = float(y_all[train].std())
        if np.ptp(y_all[train]) == 0:
            target_std = 1.0
        ys = [((y_all[rows] - target_mean) / target_std).astype(np.float32) for rows in (train, val, test)]

    labels = _label_values(raw) if task == "classification" else None
    prep.spec.update(
        task=task,
        n_dropped=raw.n_dropped,
        target=_target_spec(raw, classes, labels, cfg.target if raw.layout == "table" else None),
    )
    return Dataset(
        name=raw.name,
        source=raw.source,
        task=task,
        X_train=scale(train),
        y_train=ys[0],
        X_val=scale(val),
        y_val=ys[1],
        X_test=scale(test),
        y_test=ys[2],
        feature_names=prep.feature_names,
        classes=classes,
        feature_mean=prep.feature_mean,
        feature_std=prep.feature_std,
        target_mean=target_mean,
        target_std=target_std,
        digest=raw.digest,
        preparation=prep,
        test_rows=X.iloc[test].reset_index(drop=True),
        labels=labels,
    )


def _label_values(raw: RawData) -> list[Any]:
    """Each class id's original label as JSON: int for whole numbers, bool, else str."""
    out: list[Any] = []
    for v in np.unique(raw.y).tolist():
        if isinstance(v, bool):
            out.append(v)
        elif isinstance(v, int | float) and float(v).is_integer():
            out.append(int(v))
        elif isinstance(v, int | float):
            out.append(float(v))
        else:
            out.append(str(v))
    return out


def _target_spec(
    raw: RawData, classes: list[str] | None, labels: list[Any] | None, column: str | None
) -> dict[str, Any]:
    """The target as the served model needs it; `column` (a table's target) is let through in requests."""
    spec: dict[str, Any] = {"field": raw.label_field, "column": column}
    if classes is None or labels is None:
        return spec
    kinds = {type(v) for v in labels}
    dtype = "bool" if kinds == {bool} else "int64" if kinds == {int} else "object"
    return {**spec, "classes": classes, "labels": labels, "label_dtype": dtype}


# --------------------------------------------------------------------------------------------
# Task and labels


def _is_discrete(y: np.ndarray) -> bool:
    """True when the labels are not numbers: strings or booleans."""
    return y.dtype.kind not in "iuf"


def _resolve_task(raw: RawData, requested: str) -> Task:
    y = raw.y
    if requested == "classification":
        if y.dtype.kind == "f" and not np.all(y == np.round(y)):
            example = y[y != np.round(y)][0].item()
            raise DataError(
                f"data.task: classification needs discrete labels, but {raw.label_field} has "
                f"non-integer values (e.g. {example!r}); use task: regression"
            )
        return "classification"
    if requested == "regression":
        if _is_discrete(y):
            kind = "booleans" if y.dtype.kind == "b" else "strings"
            raise DataError(
                f"data.task: regression needs numeric labels, but {raw.label_field} holds {kind} "
                f"(e.g. {str(y[0])!r}); use task: classification"
            )
        return "regression"
    if raw.builtin is not None:
        return "classification" if BUILTIN_TASKS[raw.builtin] == "classification" else "regression"
    if _is_discrete(y):
        return "classification"
    if y.dtype.kind == "f" and not np.all(y == np.round(y)):
        return "regression"
    n_distinct = len(np.unique(y))
    if n_distinct <= AUTO_MAX_CLASSES and n_distinct * AUTO_MIN_ROWS_PER_CLASS <= len(y):
        return "classification"
    return "regression"


def _label_str(value: Any) -> str:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _encode_labels(raw: RawData) -> tuple[np.ndarray, list[str]]:
    """Class ids (sorted label values, numerically for numbers) and each class's label string."""
    values, y = np.unique(raw.y, return_inverse=True)
    if raw.class_names is not None and values.dtype.kind in "iu":
        classes = [raw.class_names[int(v)] if 0 <= v < len(raw.class_names) else str(v) for v in values]
    else:
        classes = [_label_str(v) for v in values.tolist()]
    if len(classes) < 2:
        raise DataError(
            f"{raw.label_field}: a single class ({classes[0]!r} in all {len(y)} rows); "
            "a classification needs at least two"
        )
    return y.astype(np.int64), classes


# --------------------------------------------------------------------------------------------
# Splitting


def _round(x: float) -> int:
    return math.floor(x + 0.5)


def _split_sizes(n: int, val_fraction: float, test_fraction: float, raw: RawData) -> tuple[int, int]:
    if val_fraction + test_fraction >= 1:
        raise DataError(
            f"data.val_fraction + data.test_fraction = {val_fraction + test_fraction:g} "
            "leaves no training data (must be < 1)"
        )
    n_val, n_test = _round(n * val_fraction), _round(n * test_fraction)
    sizes = {"train": n - n_val - n_test, "val": n_val, "test": n_test}
    empty = [k for k, v in sizes.items() if v <= 0]
    if empty:
        raise DataError(
            f"{raw.origin}: {n} rows are too few to split with "
            f"data.val_fraction={val_fraction:g} and data.test_fraction={test_fraction:g}: "
            f"the {' and '.join(empty)} split(s) would be empty"
        )
    return n_val, n_test


def _allocate(total: int, counts: np.ndarray, room: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Share `total` rows among classes in proportion to `counts`, at most `room` per class."""
    exact = total * counts / counts.sum()
    alloc = np.minimum(np.floor(exact).astype(np.int64), room)
    tie_break = rng.random(len(counts))
    for _ in range(total - int(alloc.sum())):
        score = np.where(alloc < room, exact - alloc, -np.inf)
        best = np.flatnonzero(score == score.max())
        alloc[best[np.argmax(tie_break[best])]] += 1
    return alloc


def _stratified_split(
    y: np.ndarray,
    classes: list[str],
    n_val: int,
    n_test: int,
    raw: RawData,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    counts = np.bincount(y, minlength=len(classes))
    n_train = len(y) - n_val - n_test
    rare = [(c, int(k)) for c, k in zip(classes, counts, strict=True) if k < 2]
    if rare:
        listing = ", ".join(f"{c}={int(k)}" for c, k in zip(classes, counts, strict=True))
        named = ", ".join(f"{c!r} has {k} row" for c, k in rare)
        raise DataError(
            f"{raw.label_field}: class {named}; a stratified split needs at least 2 rows per "
            f"class (rows per class: {listing}); drop or merge the rare classes"
        )
    if n_train < len(classes):
        raise DataError(
            f"data.val_fraction/data.test_fraction: the train split would have {n_train} rows, "
            f"fewer than the {len(classes)} classes ({raw.origin}); lower the fractions"
        )
    # Every class keeps at least one training row; val and test take their proportional share.
    n_test_c = _allocate(n_test, counts, counts - 1, rng)
    n_val_c = _allocate(n_val, counts, counts - 1 - n_test_c, rng)
    order = np.argsort(y, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    train, val, test = [], [], []
    for c in range(len(classes)):
        rows = rng.permutation(order[starts[c] : starts[c + 1]])
        t, v = n_test_c[c], n_val_c[c]
        test.append(rows[:t])
        val.append(rows[t : t + v])
        train.append(rows[t + v :])
    return (
        rng.permutation(np.concatenate(train)),
        rng.permutation(np.concatenate(val)),
        rng.permutation(np.concatenate(test)),
    )
