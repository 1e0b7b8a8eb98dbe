"""Data sets: load a built-in set or a file, split it by seed, standardise with train statistics."""

from __future__ import annotations

import functools
import hashlib
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np

from hyperflow.components.config import BUILTIN_TASKS

if TYPE_CHECKING:
    import pandas as pd

    from hyperflow.components.config import DataConfig

__all__ = [
    "AUTO_MAX_CLASSES",
    "AUTO_MIN_ROWS_PER_CLASS",
    "FILE_SUFFIXES",
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

FILE_SUFFIXES = (".csv", ".parquet", ".pq", ".npz")


class DataError(ValueError):
    """Data that cannot be used; the message names the config field (`data.path`, ...) or file."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """A data set split into train/val/test and standardised with the train statistics.

    Attributes:
        name: the built-in set's name (`digits`) or the file's stem.
        source: `sklearn.datasets.load_digits`, or the file's absolute path.
        task: `classification` or `regression`.
        X_train: float32 features, standardised with the train mean and std.
        y_train: int64 class indices (classification) or float32 targets standardised with the
            train mean and std (regression).
        X_val: as X_train, for the validation split.
        y_val: as y_train, for the validation split.
        X_test: as X_train, for the held-out test split.
        y_test: as y_train, for the held-out test split.
        feature_names: one name per feature column.
        classes: the label of each class id as a string (classification), else None.
        feature_mean: float32 per-feature train mean.
        feature_std: float32 per-feature train std (1 for a constant feature).
        target_mean: the train target mean (regression); 0.0 for a classification.
        target_std: the train target std (regression); 1.0 for a classification.
        digest: a short sha256 over the raw features and labels, stable across runs.
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

    @property
    def n_features(self) -> int:
        """The number of feature columns."""
        return int(self.X_train.shape[1])

    @property
    def n_outputs(self) -> int:
        """The number of classes, or 1 for a regression."""
        return len(self.classes) if self.classes is not None else 1

    def raw_features(self, X: np.ndarray) -> np.ndarray:
        """Undo the standardisation of features: the values in the units of the source."""
        return np.asarray(X, dtype=np.float32) * self.feature_std + self.feature_mean

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


class _Raw(NamedTuple):
    """Raw arrays before splitting, with what is needed to name them in errors."""

    X: np.ndarray  # float64, 2-D
    y: np.ndarray  # 1-D: numeric, bool, or unicode strings
    feature_names: list[str]
    name: str
    source: str
    label_field: str  # how errors name the labels: "data.target 'y'", "data.path x.npz: array 'y'"
    origin: str  # how errors name the data: "data.path: /x/y.csv", "data.source: digits"
    builtin: str | None  # the built-in set's name
    class_names: list[str] | None  # built-in sets: the name of each integer label
    digest: str


# --------------------------------------------------------------------------------------------
# Public entry points


def load_arrays(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, list[str], str, str]:
    """Load the raw data named by the config, before any splitting or scaling.

    Args:
        cfg: the `data` section of the config.

    Returns:
        `(X, y, feature_names, name, source)`: X as a 2-D float64 array, y as a 1-D array of the
        original labels (numbers, booleans or strings), the feature names, the data set's name and
        its source (the scikit-learn loader or the file's absolute path).

    Raises:
        DataError: the file is missing, unreadable or holds unusable values.
    """
    raw = _load_raw(cfg)
    return raw.X.copy(), raw.y.copy(), list(raw.feature_names), raw.name, raw.source


def load_dataset(cfg: DataConfig, seed: int) -> Dataset:
    """Load, split (stratified for a classification) and standardise a data set.

    Args:
        cfg: the `data` section of the config.
        seed: seeds the split; the same seed gives the same split.

    Returns:
        The split and standardised data set.

    Raises:
        DataError: the data cannot be loaded, the task does not fit the labels, or the split would
            leave a split empty; the message names the config field or the file.
    """
    raw = _load_raw(cfg)
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
    mean = X[train].mean(axis=0)
    std = X[train].std(axis=0)
    std[np.ptp(X[train], axis=0) == 0] = 1.0  # a constant feature: centred, never divided by 0

    def scale(rows: np.ndarray) -> np.ndarray:
        return ((X[rows] - mean) / std).astype(np.float32)

    if task == "classification":
        target_mean, target_std = 0.0, 1.0
        ys = [y_all[rows].astype(np.int64) for rows in (train, val, test)]
    else:
        target_mean = float(y_all[train].mean())
        target_std = float(y_all[train].std())
        if np.ptp(y_all[train]) == 0:
            target_std = 1.0
        ys = [((y_all[rows] - target_mean) / target_std).astype(np.float32) for rows in (train, val, test)]

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
        feature_names=list(raw.feature_names),
        classes=classes,
        feature_mean=mean.astype(np.float32),
        feature_std=std.astype(np.float32),
        target_mean=target_mean,
        target_std=target_std,
        digest=raw.digest,
    )


# --------------------------------------------------------------------------------------------
# Loading


def _load_raw(cfg: DataConfig) -> _Raw:
    if cfg.module:
        raise DataError(
            f"data.module: {cfg.module!r} is a LightningDataModule; it loads its own data, "
            "not through load_dataset"
        )
    if cfg.source != "file":
        return _builtin(cfg.source)
    if not cfg.path:
        raise DataError("data.path: required when data.source is 'file'")
    path = Path(cfg.path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise DataError(
            f"data.path: {path}: unsupported file type {suffix or '(none)'!r} (use .csv, .parquet or .npz)"
        )
    if not path.exists():
        raise DataError(f"data.path: {path}: no such file")
    if not path.is_file():
        raise DataError(f"data.path: {path}: not a file")
    path = path.resolve()
    if suffix == ".npz":
        return _from_npz(path, cfg.target)
    if not cfg.target:
        columns = _columns_hint(path)
        raise DataError(f"data.target: required for a {suffix} file (the label column{columns})")
    frame = _read_frame(path)
    return _from_frame(frame, path, cfg.target)


@functools.cache
def _builtin(source: str) -> _Raw:
    """A scikit-learn bundled data set (read from disk, never downloaded); cached per process."""
    from sklearn import datasets  # slow to import: only when a built-in set is asked for

    if source not in BUILTIN_TASKS:
        raise DataError(f"data.source: unknown data set {source!r}")
    loader = getattr(datasets, f"load_{source}")
    bunch = loader(scaled=False) if source == "diabetes" else loader()
    X = np.ascontiguousarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target)
    names = [str(f) for f in bunch.feature_names]
    class_names = None
    if "target_names" in bunch:
        class_names = [str(c) for c in bunch.target_names]
    X.setflags(write=False)
    y.setflags(write=False)
    return _Raw(
        X=X,
        y=y,
        feature_names=names,
        name=source,
        source=f"sklearn.datasets.load_{source}",
        label_field=f"data.source {source!r}: the labels",
        origin=f"data.source: {source}",
        builtin=source,
        class_names=class_names,
        digest=_digest(X, y),
    )


def _columns_hint(path: Path) -> str:
    try:
        frame = _read_frame(path, nrows=0)
    except DataError:
        return ""
    return f"; columns: {', '.join(map(str, frame.columns))}" if len(frame.columns) else ""


def _read_frame(path: Path, nrows: int | None = None) -> pd.DataFrame:
    import pandas as pd

    if path.stat().st_size == 0:
        raise DataError(f"data.path: {path}: the file is empty")
    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path, nrows=nrows)
        if nrows == 0:
            import pyarrow.parquet as pq

            return pq.read_schema(path).empty_table().to_pandas()
        return pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"data.path: {path}: the file is empty (no header, no rows)") from None
    except Exception as exc:  # any reader failure is a bad file
        raise DataError(f"data.path: {path}: cannot read the file: {exc}") from None


def _from_frame(frame: pd.DataFrame, path: Path, target: str) -> _Raw:
    import pandas as pd

    columns = [str(c) for c in frame.columns]
    if target not in columns:
        available = ", ".join(columns) if columns else "(none)"
        raise DataError(f"data.target: {target!r} is not a column of {path} (columns: {available})")
    if len(frame) == 0:
        raise DataError(f"data.path: {path}: no rows (only a header)")
    frame = frame.set_axis(columns, axis=1)
    features = [c for c in columns if c != target]
    if not features:
        raise DataError(f"data.path: {path}: no feature columns besides the target {target!r}")

    non_numeric = [
        c
        for c in features
        if not pd.api.types.is_numeric_dtype(frame[c]) or isinstance(frame[c].dtype, pd.CategoricalDtype)
    ]
    if non_numeric:
        raise DataError(
            f"data.path: {path}: feature column(s) {_quoted(non_numeric)} are not numeric; "
            "encode them as numbers first"
        )
    X = frame[features].to_numpy(dtype=np.float64, na_value=np.nan)
    _check_features(X, features, path)

    label_field = f"data.target {target!r}"
    labels = frame[target]
    missing = labels.isna().to_numpy()
    if pd.api.types.is_bool_dtype(labels) and not missing.any():
        y = labels.to_numpy(dtype=bool)
    elif pd.api.types.is_numeric_dtype(labels) and not isinstance(labels.dtype, pd.CategoricalDtype):
        y = labels.to_numpy(dtype=np.float64, na_value=np.nan)
        if pd.api.types.is_integer_dtype(labels) and not missing.any():
            y = labels.to_numpy(dtype=np.int64)
        missing = missing | ~np.isfinite(y.astype(np.float64))
    else:
        y = np.array(["" if m else str(v) for v, m in zip(labels.tolist(), missing, strict=True)])
    _check_missing_labels(missing, label_field, path)
    return _file_raw(X, y, features, path, label_field)


def _from_npz(path: Path, target: str | None) -> _Raw:
    label_key = target or "y"
    if path.stat().st_size == 0:
        raise DataError(f"data.path: {path}: the file is empty")
    if not zipfile.is_zipfile(path):
        raise DataError(f"data.path: {path}: not an .npz archive (save it with np.savez)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:  # any reader failure is a bad file
        hint = "; store strings as a unicode array, not objects" if "pickle" in str(exc) else ""
        raise DataError(f"data.path: {path}: cannot read the file: {exc}{hint}") from None
    present = ", ".join(arrays) if arrays else "none"
    if "X" not in arrays:
        raise DataError(
            f"data.path: {path}: no array 'X' (arrays: {present}); an .npz file needs arrays X and y"
        )
    if label_key not in arrays:
        field = (
            f"data.target: no array {label_key!r} in {path}"
            if target
            else (f"data.path: {path}: no array 'y'")
        )
        raise DataError(f"{field} (arrays: {present}); an .npz file needs arrays X and y")
    X, y = arrays["X"], arrays[label_key]
    label_field = f"data.path {path}: array {label_key!r}"
    if X.ndim != 2:
        raise DataError(f"data.path: {path}: X must be 2-D (rows x features), not shape {X.shape}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{label_field} must be 1-D (one label per row), not shape {y.shape}")
    if len(X) != len(y):
        raise DataError(f"data.path: {path}: X has {len(X)} rows but {label_key} has {len(y)}")
    if len(X) == 0:
        raise DataError(f"data.path: {path}: no rows (X and {label_key} are empty)")
    if X.shape[1] == 0:
        raise DataError(f"data.path: {path}: X has no feature columns")
    if X.dtype.kind not in "biuf":
        raise DataError(f"data.path: {path}: X is not numeric (dtype {X.dtype})")

    names = [f"x{i}" for i in range(X.shape[1])]
    if "feature_names" in arrays:
        given = [str(v) for v in np.ravel(arrays["feature_names"])]
        if len(given) != X.shape[1]:
            raise DataError(
                f"data.path: {path}: feature_names has {len(given)} names for {X.shape[1]} columns"
            )
        names = given
    X = np.ascontiguousarray(X, dtype=np.float64)
    _check_features(X, names, path)

    if y.dtype.kind == "S":
        y = y.astype(str)
    if y.dtype.kind in "iuf":
        missing = ~np.isfinite(y.astype(np.float64))
    elif y.dtype.kind in "bU":
        missing = np.zeros(len(y), dtype=bool)
    else:
        raise DataError(f"{label_field}: unsupported label dtype {y.dtype}")
    _check_missing_labels(missing, label_field, path)
    return _file_raw(X, y, names, path, label_field)


def _file_raw(X: np.ndarray, y: np.ndarray, names: list[str], path: Path, label_field: str) -> _Raw:
    return _Raw(
        X=X,
        y=y,
        feature_names=names,
        name=path.stem,
        source=str(path),
        label_field=label_field,
        origin=f"data.path: {path}",
        builtin=None,
        class_names=None,
        digest=_digest(X, y),
    )


def _check_features(X: np.ndarray, names: list[str], path: Path) -> None:
    bad = ~np.isfinite(X)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        cols = [names[i] for i in np.flatnonzero(bad.any(axis=0))]
        raise DataError(
            f"data.path: {path}: NaN or infinite values in {len(rows)} of {len(X)} rows "
            f"(feature column(s) {_quoted(cols)}; first at row {int(rows[0])}); "
            "fill or drop them first"
        )


def _check_missing_labels(missing: np.ndarray, label_field: str, path: Path) -> None:
    if missing.any():
        rows = np.flatnonzero(missing)
        raise DataError(
            f"{label_field}: missing (NaN) or infinite labels in {len(rows)} of "
            f"{len(missing)} rows of {path} (first at row {int(rows[0])})"
        )


def _quoted(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


# --------------------------------------------------------------------------------------------
# Task and labels


def _is_discrete(y: np.ndarray) -> bool:
    """True when the labels are not numbers: strings or booleans."""
    return y.dtype.kind not in "iuf"


def _resolve_task(raw: _Raw, requested: str) -> Task:
    y = raw.y
    if requested == "classification":
        if y.dtype.kind == "f" and not np.all(y == np.round(y)):
            example = y[y != np.round(y)][0]
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


def _encode_labels(raw: _Raw) -> tuple[np.ndarray, list[str]]:
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


def _split_sizes(n: int, val_fraction: float, test_fraction: float, raw: _Raw) -> tuple[int, int]:
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
    raw: _Raw,
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


def _digest(X: np.ndarray, y: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(f"{X.shape}|{y.dtype.kind}|".encode())
    h.update(np.ascontiguousarray(X, dtype=np.float64).tobytes())
    if y.dtype.kind == "U":
        h.update("\x1f".join(y.tolist()).encode())
    else:
        h.update(np.ascontiguousarray(y, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]
