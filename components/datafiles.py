"""Reading a data set's raw features and labels: a scikit-learn bundled set, or a csv, parquet or npz file."""

from __future__ import annotations

import collections
import functools
import hashlib
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from hyperflow.components.config import DataConfig
from hyperflow.components.config_checks import BUILTIN_TASKS, data_file_problem
from hyperflow.components.served_model import FLOAT32_MAX, TEMPORAL_TYPES

__all__ = ["DataError", "RawData", "load_raw"]

ID_MIN_DISTINCT = 1000  # `auto`: a text column with more distinct values than this and half its rows


class DataError(ValueError):
    """Data that cannot be used; the message names the config field (`data.path`, ...) or file."""


class RawData(NamedTuple):
    """Raw features and labels before splitting, with what is needed to name them in errors."""

    X: pd.DataFrame  # the feature columns as read: numbers, strings, booleans; gaps as NaN
    y: np.ndarray  # 1-D: numeric, bool, or unicode strings
    feature_names: list[str]
    name: str
    source: str
    label_field: str  # how errors name the labels: "data.target 'y'", "data.path x.npz: array 'y'"
    origin: str  # how errors name the data: "data.path: /x/y.csv", "data.source: digits"
    builtin: str | None  # the built-in set's name
    class_names: list[str] | None  # built-in sets: the name of each integer label
    digest: str
    layout: str = "array"  # "table": named columns (csv, parquet); "array": positional (built-in, npz)
    n_dropped: int = 0  # rows left out by `data.missing: drop`


def load_raw(cfg: DataConfig) -> RawData:
    """The raw arrays `data` names, before any split; every problem a DataError naming its key or file."""
    if cfg.module:
        raise DataError(
            f"data.module: {cfg.module!r} is a LightningDataModule; it loads its own data, "
            "not through load_dataset"
        )
    if cfg.source != "file":
        return _builtin(cfg.source)
    problem = data_file_problem(cfg.path, cfg.target, columns=_columns_hint)
    if problem is not None:
        key, message = problem
        raise DataError(f"{key}: {message}")
    assert cfg.path is not None
    path = Path(cfg.path).expanduser().resolve()
    if path.suffix.lower() == ".npz":
        return _from_npz(path, cfg.target, cfg)
    assert cfg.target is not None
    frame = _read_frame(path)
    return _from_frame(frame, path, cfg.target, cfg)


@functools.cache
def _builtin(source: str) -> RawData:
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
    frame = pd.DataFrame(X, columns=names, copy=False)
    return RawData(
        X=frame,
        y=y,
        feature_names=names,
        name=source,
        source=f"sklearn.datasets.load_{source}",
        label_field=f"data.source {source!r}: the labels",
        origin=f"data.source: {source}",
        builtin=source,
        class_names=class_names,
        digest=_digest(frame, y),
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
            # pandas renames a repeated name (`y`, `y.1`): a repeated target would become a feature
            header = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False)
            _check_unique_names([str(v) for v in header.iloc[0]] if len(header) else [], path)
            return pd.read_csv(path, nrows=nrows)
        import pyarrow.parquet as pq

        schema = pq.read_schema(path)
        _check_unique_names(list(schema.names), path)
        if nrows == 0:
            return schema.empty_table().to_pandas()
        return pd.read_parquet(path)
    except DataError:
        raise
    except pd.errors.EmptyDataError:
        raise DataError(f"data.path: {path}: the file is empty (no header, no rows)") from None
    except Exception as exc:  # any reader failure is a bad file
        raise DataError(f"data.path: {path}: cannot read the file: {exc}") from None


def _check_unique_names(names: list[str], path: Path) -> None:
    counts = collections.Counter(names)
    repeated = [n for n in counts if n and counts[n] > 1]  # an empty name is pandas' "Unnamed: i"
    if repeated:
        raise DataError(
            f"data.path: {path}: the header repeats column name(s) {_quoted(repeated)}; "
            "give each column a name of its own, or remove the copies"
        )


def _from_frame(frame: pd.DataFrame, path: Path, target: str, cfg: DataConfig) -> RawData:
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

    for c in columns:  # before anything hashes or encodes a cell
        field = f"data.target {target!r} in {path}" if c == target else f"data.path: {path}: column {c!r}"
        _check_cells(frame[c], field, path)
    _check_categorical(frame[features], cfg, path, target)
    X = frame[features].reset_index(drop=True)
    frame = frame.reset_index(drop=True)

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
        _check_label_range(y, cfg, label_field, path)
    else:
        y = np.array(["" if m else str(v) for v, m in zip(labels.tolist(), missing, strict=True)])
    X, y, dropped = _apply_missing(X, y, missing, cfg, path)
    if not dropped:
        _check_missing_labels(missing, label_field, path)
    return _file_raw(X, y, features, path, label_field, layout="table", n_dropped=dropped)


def _check_cells(values: pd.Series, field: str, path: Path) -> None:
    """Refuse a column of dates, times or durations, or one with a cell that is a list, array or mapping.

    A parquet list or struct column reads as arrays or dicts in cells: neither a number nor a category.
    Dates would be one-hot encoded by their text (every distinct day a category): numbers are asked for.
    """
    dtype = values.dtype
    to_numbers = "convert it to numbers first (e.g. seconds since the epoch, or a duration in seconds)"
    if getattr(dtype, "kind", None) in ("M", "m") or isinstance(dtype, pd.PeriodDtype):
        raise DataError(f"{field} holds dates, times or durations, not numbers or strings; {to_numbers}")
    if (
        not pd.api.types.is_object_dtype(dtype)
        or pd.api.types.infer_dtype(values, skipna=True) in _PLAIN_CELLS
    ):
        return  # numbers, booleans, categories and text: nothing to look at cell by cell
    for i, v in enumerate(values.tolist()):
        if isinstance(v, list | tuple | np.ndarray | set | frozenset):
            kind, hint = "lists or arrays", "store one number or string per cell (a column per element)"
        elif isinstance(v, dict):
            kind, hint = "mappings", "store one number or string per cell (a column per field)"
        elif isinstance(v, TEMPORAL_TYPES):
            kind, hint = "dates, times or durations", to_numbers
        elif not pd.api.types.is_scalar(v):
            kind, hint = f"{type(v).__name__} objects", "store one number or string per cell"
        else:
            continue
        raise DataError(
            f"{field} holds {kind} ({_row(i, path)}: {_shown(v)}), not numbers or strings; {hint}"
        )


_PLAIN_CELLS = {
    "string",
    "empty",
    "integer",
    "floating",
    "mixed-integer-float",
    "boolean",
    "decimal",
    "bytes",
}


def _shown(v: object, limit: int = 60) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_label_range(y: np.ndarray, cfg: DataConfig, label_field: str, path: Path) -> None:
    """A regression target float32 cannot hold (`1e200`): its scaling overflows. Class labels are names."""
    if cfg.task == "classification" or y.dtype.kind != "f":
        return
    beyond = _beyond_float32(y)
    if beyond.any():
        i = int(np.flatnonzero(beyond)[0])
        raise DataError(
            f"{label_field}: numbers beyond float32's range (±{FLOAT32_MAX:.4g}) in {int(beyond.sum())} of "
            f"{len(y)} rows of {path} (first at {_row(i, path)}: {float(y[i])!r}); the network computes in float32: "
            "rescale the target (e.g. a log), or set data.task: classification if they are class labels"
        )


def _beyond_float32(x: np.ndarray) -> np.ndarray:
    """Per value: finite, but infinite as float32 (the network's input)."""
    with np.errstate(over="ignore"):
        return np.isfinite(x) & ~np.isfinite(x.astype(np.float32))


def _from_npz(path: Path, target: str | None, cfg: DataConfig) -> RawData:
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
    frame = pd.DataFrame(np.ascontiguousarray(X, dtype=np.float64), columns=names)
    _check_categorical(frame, cfg, path, None)

    if y.dtype.kind == "S":
        y = y.astype(str)
    if y.dtype.kind in "iuf":
        missing = ~np.isfinite(y.astype(np.float64))
        _check_label_range(y, cfg, label_field, path)
    elif y.dtype.kind in "bU":
        missing = np.zeros(len(y), dtype=bool)
    else:
        raise DataError(f"{label_field}: unsupported label dtype {y.dtype}")
    frame, y, dropped = _apply_missing(frame, y, missing, cfg, path)
    if not dropped:
        _check_missing_labels(missing, label_field, path)
    return _file_raw(frame, y, names, path, label_field, layout="array", n_dropped=dropped)


def _file_raw(
    X: pd.DataFrame,
    y: np.ndarray,
    names: list[str],
    path: Path,
    label_field: str,
    *,
    layout: str,
    n_dropped: int,
) -> RawData:
    return RawData(
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
        layout=layout,
        n_dropped=n_dropped,
    )


def _check_categorical(X: pd.DataFrame, cfg: DataConfig, path: Path, target: str | None) -> None:
    """`data.categorical` names feature columns, and with a list every string column is in it;
    with `auto`, a column of numbers but for a few cells (a typo) is refused, not one-hot encoded."""
    if cfg.categorical == "auto":
        _check_stray_strings(X, path)
        _check_identifiers(X, path)
        return
    names = [str(c) for c in X.columns]
    unknown = [c for c in cfg.categorical if c not in names]
    if unknown:
        what = "the target, not a feature column" if target in unknown else "not feature column(s)"
        raise DataError(
            f"data.categorical: {_quoted(unknown)} are {what} of {path} (feature columns: {_quoted(names)})"
        )
    strings = [
        c
        for c in names
        if c not in cfg.categorical
        and (not pd.api.types.is_numeric_dtype(X[c]) or isinstance(X[c].dtype, pd.CategoricalDtype))
    ]
    if strings:
        raise DataError(
            f"data.categorical: feature column(s) {_quoted(strings)} of {path} are not numeric; "
            "list them in data.categorical too, or set it to auto"
        )


def _check_stray_strings(X: pd.DataFrame, path: Path) -> None:
    """Refuse a text column whose values are numbers in at least 90% of its filled cells.

    `auto` would one-hot encode it by its text (every distinct number a category): nearly always
    a typo in a numeric column. A column meant as categories is listed in `data.categorical`.
    """
    for c in X.columns:
        if not (X[c].dtype == object or pd.api.types.is_string_dtype(X[c].dtype)):
            continue  # numbers, booleans and category columns are what they say
        filled = X[c].dropna()
        numbers = pd.to_numeric(
            filled.map(lambda v: v if isinstance(v, str | int | float) else None), errors="coerce"
        )
        stray = numbers.isna() & filled.map(lambda v: not isinstance(v, bool))
        n_numbers = int((~numbers.isna()).sum())
        if len(filled) == 0 or n_numbers == 0 or n_numbers < 0.9 * len(filled) or not stray.any():
            continue
        first = int(np.flatnonzero(stray.to_numpy())[0])
        i = int(X.index.get_loc(filled.index[first]))
        raise DataError(
            f"data.path: {path}: column {str(c)!r} holds numbers in {n_numbers} of its {len(filled)} filled "
            f"rows but {filled.iloc[first]!r} at {_row(i, path)} ({int(stray.sum())} such row(s)); fix those "
            "cells, or list the column in data.categorical to one-hot encode it by its text"
        )


def _check_identifiers(X: pd.DataFrame, path: Path) -> None:
    """Refuse a text column with more than ID_MIN_DISTINCT distinct values and more than half as many as
    rows: an identifier (`order_id`), which `auto` would one-hot encode into as many dense columns."""
    for c in X.columns:
        dtype = X[c].dtype
        if pd.api.types.is_bool_dtype(dtype) or (
            pd.api.types.is_numeric_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype)
        ):
            continue  # numbers are standardised, booleans are two columns at most
        distinct = int(X[c].nunique(dropna=True))
        if distinct > ID_MIN_DISTINCT and 2 * distinct > len(X):
            raise DataError(
                f"data.path: {path}: text column {str(c)!r} has {distinct} distinct values in {len(X)} rows "
                f"(more than {ID_MIN_DISTINCT}, and more than half the rows): an identifier, not a category "
                f"(data.categorical: auto would one-hot encode it into {distinct} columns); remove the column "
                "from the file (no config key leaves a column out), or list it in data.categorical with the "
                "other text columns to one-hot encode it anyway"
            )


def _gaps(X: pd.DataFrame, categorical: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per cell: a gap (NaN, None, empty), an infinite number, and a finite one beyond float32's range.

    A number column listed in `categorical` is categories by their text: only its infinite cells count.
    """
    gap = X.isna().to_numpy()
    inf = np.zeros_like(gap)
    beyond = np.zeros_like(gap)
    for i, c in enumerate(X.columns):
        if pd.api.types.is_float_dtype(X[c]):
            x = X[c].to_numpy(dtype=np.float64, na_value=np.nan)
            inf[:, i] = np.isinf(x)
            if str(c) not in categorical:
                beyond[:, i] = _beyond_float32(x)
    return gap, inf, beyond


def _apply_missing(
    X: pd.DataFrame, y: np.ndarray, label_missing: np.ndarray, cfg: DataConfig, path: Path
) -> tuple[pd.DataFrame, np.ndarray, int]:
    """Refuse infinite values and numbers beyond float32's range (always) and gaps (`missing: error`);
    drop rows (`drop`); else keep them."""
    names = [str(c) for c in X.columns]
    gap, inf, beyond = _gaps(X, [] if cfg.categorical == "auto" else cfg.categorical)
    if beyond.any():
        rows = np.flatnonzero(beyond.any(axis=1))
        cols = [names[i] for i in np.flatnonzero(beyond.any(axis=0))]
        first = int(rows[0])
        col = int(np.flatnonzero(beyond[first])[0])
        raise DataError(
            f"data.path: {path}: numbers beyond float32's range (±{FLOAT32_MAX:.4g}) in {len(rows)} of "
            f"{len(X)} rows (feature column(s) {_quoted(cols)}; first at {_row(first, path)}: "
            f"{names[col]!r} holds {float(X.iloc[first, col])!r}); the network computes in float32: rescale "
            "the column (e.g. a log or a unit change), or list it in data.categorical if its values are categories"
        )
    bad = inf | gap if cfg.missing == "error" else inf
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        cols = [names[i] for i in np.flatnonzero(bad.any(axis=0))]
        hint = (
            "fill or drop them first, or set data.missing: impute or drop" if not inf.any() else "fill them"
        )
        raise DataError(
            f"data.path: {path}: NaN or infinite values in {len(rows)} of {len(X)} rows "
            f"(feature column(s) {_quoted(cols)}; first at {_row(int(rows[0]), path)}); {hint}"
        )
    if cfg.missing != "drop":
        return X, y, 0
    drop = gap.any(axis=1) | label_missing
    if drop.all():
        raise DataError(
            f"data.missing: drop leaves no rows of {path}: every row has a gap "
            f"(columns with gaps: {_quoted([names[i] for i in np.flatnonzero(gap.any(axis=0))])})"
        )
    keep = ~drop
    return X[keep].reset_index(drop=True), y[keep], int(drop.sum())


def _check_missing_labels(missing: np.ndarray, label_field: str, path: Path) -> None:
    if missing.any():
        rows = np.flatnonzero(missing)
        raise DataError(
            f"{label_field}: missing (NaN) or infinite labels in {len(rows)} of "
            f"{len(missing)} rows of {path} (first at {_row(int(rows[0]), path)})"
        )


def _row(i: int, path: Path) -> str:
    """Row i of a data file as a message names it: counted from 0, with a CSV's line (one header line)."""
    if path.suffix.lower() == ".csv":
        return f"row {i} (counting from 0: line {i + 2} of the file)"
    return f"row {i} (counting from 0)"


def _quoted(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _digest(X: pd.DataFrame, y: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(f"{X.shape}|{y.dtype.kind}|".encode())
    if all(pd.api.types.is_numeric_dtype(X[c]) for c in X.columns):
        h.update(np.ascontiguousarray(X.to_numpy(dtype=np.float64, na_value=np.nan)).tobytes())
    else:  # strings: pandas' stable per-row hash of every column
        h.update(pd.util.hash_pandas_object(X, index=False).to_numpy().tobytes())
    if y.dtype.kind == "U":
        h.update("\x1f".join(y.tolist()).encode())
    else:
        h.update(np.ascontiguousarray(y, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]
