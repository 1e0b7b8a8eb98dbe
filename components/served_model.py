"""The champion as MLflow logs it (models-from-code): raw rows → the stored preparation → the pt2 network.

This file is copied into every `best_model/` and run by `mlflow.pyfunc.load_model` and
`mlflow models serve`, so it imports nothing of hyperflow: only mlflow, numpy, pandas and torch.
The preparation it applies is `preparation.json` (fill values and categories, no pickle), written
from the scikit-learn ColumnTransformer that prepared the training data
(`hyperflow.components.preparation`); the network (`network/model.pt2`, a torch.export program)
standardises the numeric columns itself, so it also takes prepared rows on its own.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

__all__ = [
    "FLOAT32_MAX",
    "TEMPORAL_TYPES",
    "ServedModel",
    "category_strings",
    "encode_rows",
    "format_outputs",
    "rows_frame",
]

FLOAT32_MAX = float(np.finfo(np.float32).max)  # the network computes in float32: training refuses more too
# Dates, times and durations (pandas' and numpy's too): not numbers (pandas would give nanoseconds)
# and not categories; refused where a number is due, in training data and in served rows alike.
TEMPORAL_TYPES = (datetime.date, datetime.time, datetime.timedelta, np.datetime64, np.timedelta64)


def category_strings(values: pd.Series) -> pd.Series:
    """A categorical column as strings (gaps stay NaN); whole floats lose their `.0` (`3.0` → `3`).

    Training and serving both go through this, so that `True`, `3` and `"3"` name one category
    whichever way a reader typed the column.
    """

    def one(v: Any) -> Any:
        if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
            return np.nan
        if isinstance(v, float | np.floating) and float(v).is_integer():
            return str(int(v))
        if isinstance(v, np.bool_):
            return str(bool(v))
        return str(v)

    return pd.Series([one(v) for v in values.tolist()], index=values.index, dtype=object)


def encode_rows(rows: Any, spec: dict[str, Any]) -> np.ndarray:
    """Fill gaps and one-hot encode raw rows as the network's float64 input (before its scaling).

    `rows` is what a caller or MLflow's scoring server hands over: a DataFrame (a table's columns by
    name; array data by position), a 2-D array or list of rows (by position, in the preparation's
    column order), one row as a 1-D array, a dict of columns, or a list of records. Numeric columns
    come first, then each categorical column's categories in order: the layout of the
    ColumnTransformer the data was prepared with. A gap takes the train split's fill value; a
    category unseen in training encodes as none of the known ones (all zeros).

    Raises:
        ValueError: the rows are a scalar or have the wrong width, miss a numeric column, name a
            column the model does not know, or hold in a numeric column something other than a
            number (a string; a boolean, unless the column was trained on booleans) or a number
            that is infinite or beyond float32's range (the network's input).
    """
    columns = spec["columns"]
    frame = rows_frame(rows, spec)
    n = len(frame)
    parts: list[np.ndarray] = []
    for kind in ("numeric", "categorical"):
        for position, col in enumerate(columns):
            if col["kind"] != kind:
                continue
            given = frame[col["name"]] if col["name"] in frame else pd.Series([np.nan] * n, index=frame.index)
            if kind == "numeric":
                x = _numbers(given, _named(col, position, spec), booleans=col.get("dtype") == "boolean")
                parts.append(np.where(np.isnan(x), col["fill"], x)[:, None])
            else:
                s = category_strings(given).fillna(col["fill"]).to_numpy(dtype=object)
                known = np.asarray(col["categories"], dtype=object)
                parts.append((s[:, None] == known[None, :]).astype(np.float64))
    return np.concatenate(parts, axis=1).astype(np.float64) if parts else np.zeros((n, 0), np.float64)


def rows_frame(rows: Any, spec: dict[str, Any]) -> pd.DataFrame:
    """Raw rows in any form `encode_rows` takes, as a DataFrame named by the preparation's columns.

    The checks MLflow's signature made before (the model has no input schema, see `served_signature`
    in hyperflow's registry) are made here: the width of positional rows, the numeric (required)
    columns of a table, and no column the model does not know (the target column is let through).
    """
    names = [c["name"] for c in spec["columns"]]
    if not isinstance(rows, dict | pd.DataFrame | pd.Series) and np.ndim(rows) == 0:
        # `{"inputs": 5}` arrives as a 0-d array, `predict(5)` as the number itself
        raise ValueError(
            f"expected rows of {len(names)} features{_order(spec)}, got a scalar: {_shown(_scalar(rows))}"
        )
    if isinstance(rows, dict):  # the scoring server's `inputs` as columns, or a caller's dict
        rows = _frame_of_columns(rows)
    elif isinstance(rows, list | np.ndarray) and len(rows) > 0 and all(isinstance(r, dict) for r in rows):
        rows = pd.DataFrame([{k: _scalar(v) for k, v in r.items()} for r in rows])  # records
    elif isinstance(rows, pd.Series):
        rows = rows.to_frame().T  # one row, its index naming the columns
    if isinstance(rows, pd.DataFrame) and spec["layout"] == "table":
        return _named_columns(rows, spec)
    try:
        array = np.asarray(rows.to_numpy() if isinstance(rows, pd.DataFrame) else rows)
    except ValueError as exc:  # ragged rows
        raise ValueError(f"expected rows of {len(names)} values each: {exc}") from None
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != len(names):
        raise ValueError(
            f"expected rows of {len(names)} features{_order(spec)}, got an array of shape {array.shape}"
        )
    if isinstance(rows, list):
        # One array would make every cell one type (`True` among numbers 1, among strings 'True'):
        # a frame built from the list keeps each column's own values, for `_numbers` to judge.
        return pd.DataFrame(rows if np.ndim(rows) == 2 else [rows], columns=names)
    return pd.DataFrame(array, columns=names)


def _order(spec: dict[str, Any]) -> str:
    """A table's column order, for the messages about positional rows."""
    if spec["layout"] != "table":
        return ""
    return f" ({', '.join(c['name'] for c in spec['columns'])}, in this order)"


def _named(col: dict[str, Any], position: int, spec: dict[str, Any]) -> str:
    """A column as messages name it: a table's by its name, array data's by its position (and name)."""
    if spec["layout"] == "table":
        return f"column {col['name']!r}"
    return f"feature {position} ({col['name']!r})"


def _shown(value: Any) -> str:
    """A value as messages quote it: numpy scalars as Python's (`inf`, `True`), strings quoted."""
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _named_columns(frame: pd.DataFrame, spec: dict[str, Any]) -> pd.DataFrame:
    """A table's rows by column name: every numeric column present, no column the model does not know."""
    names = [c["name"] for c in spec["columns"]]
    given = [str(c) for c in frame.columns]
    repeated = sorted({c for c in given if given.count(c) > 1})
    if repeated:
        raise ValueError(f"duplicate column(s) {repeated}: give each column once")
    required = [c["name"] for c in spec["columns"] if c["kind"] == "numeric"]
    missing = [c for c in required if c not in given]
    target = spec.get("target", {}).get("column")
    unknown = [c for c in given if c not in set(names) and c != target]
    if missing or unknown:
        problems = []
        if missing:
            problems.append(f"missing column(s) {missing}")
        if unknown:
            problems.append(f"unknown column(s) {unknown}")
        optional = [c["name"] for c in spec["columns"] if c["kind"] != "numeric"]
        takes = f"the model takes {required}" + (f", and optionally {optional}" if optional else "")
        raise ValueError(f"{'; '.join(problems)}: {takes}")
    return frame.set_axis(given, axis=1)


def _frame_of_columns(columns: dict[str, Any]) -> pd.DataFrame:
    """A dict of columns (lists or arrays; scalars for one row) as a DataFrame."""
    values = {str(k): _scalar(v) for k, v in columns.items()}
    if all(np.ndim(v) == 0 for v in values.values()):
        return pd.DataFrame([values])
    return pd.DataFrame(values)


def _scalar(value: Any) -> Any:
    """A 0-d array (how the scoring server passes a JSON scalar) as its value."""
    return value.item() if isinstance(value, np.ndarray) and value.ndim == 0 else value


_BOOLEAN_WORDS = {"true": True, "false": False}


def _numbers(values: pd.Series, name: str, booleans: bool = False) -> np.ndarray:
    """A numeric column as float64 (gaps NaN); what is not a finite float32 number is refused.

    `name` is how the message names the column. A string is refused, and so is a boolean unless
    `booleans` (a column trained on booleans): `True` where a number is due is a caller's slip, not 1.
    An infinite number, or one that float32 (the network's input) cannot hold (`1e308`), is refused
    as training refuses it; gaps (NaN, `None`) are not refused here: they take the fill value.
    """
    given = values  # as the messages quote it
    gap = values.isna().to_numpy()
    boolean = np.zeros(len(values), dtype=bool)
    temporal = np.zeros(len(values), dtype=bool)  # dates and durations: pandas would give nanoseconds
    if pd.api.types.is_bool_dtype(values.dtype):  # numpy's bool, pandas' `boolean` (gaps NA)
        boolean = ~gap
        values = values.astype(object).where(~gap, np.nan)
    elif pd.api.types.is_datetime64_any_dtype(values.dtype) or pd.api.types.is_timedelta64_dtype(
        values.dtype
    ):
        temporal = ~gap
    elif (
        values.dtype == object
        or pd.api.types.is_string_dtype(values.dtype)
        or isinstance(values.dtype, pd.CategoricalDtype)
    ):
        cells = values.tolist()
        boolean = np.array([isinstance(v, bool | np.bool_) for v in cells], dtype=bool)
        temporal = np.array([isinstance(v, TEMPORAL_TYPES) for v in cells], dtype=bool)
        if booleans:  # trained on booleans: their text too ('True'), as a list of mixed rows gives them
            truth = [_BOOLEAN_WORDS.get(v.strip().lower()) if isinstance(v, str) else None for v in cells]
            boolean |= np.array([t is not None for t in truth], dtype=bool)
            values = pd.Series(
                [v if t is None else t for v, t in zip(cells, truth, strict=True)], index=values.index
            )
    if temporal.any():
        values = values.astype(object).where(~temporal, np.nan)  # not a number: refused below
    x = _floats(values)
    _refuse_rows((np.isnan(x) & ~gap) | (boolean & (not booleans)), given, f"{name} takes numbers")
    with np.errstate(over="ignore"):
        beyond = ~np.isfinite(x.astype(np.float32)) & ~gap
    _refuse_rows(beyond, given, f"{name} takes finite numbers within float32's range (±{FLOAT32_MAX:.4g})")
    return x


def _refuse_rows(bad: np.ndarray, values: pd.Series, what: str) -> None:
    """Raise `what`, quoting the first row where `bad` holds and counting them (none: nothing)."""
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{what}, but row {i} holds {_shown(values.iloc[i])} ({int(bad.sum())} such row(s))")


def _floats(values: pd.Series) -> np.ndarray:
    """The values as float64: NaN for a gap or what is not a number, ±inf for an integer too large."""
    try:
        return pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    except OverflowError:  # a Python int beyond float64, as JSON may give one

        def one(v: Any) -> float:
            try:
                return float(v)
            except OverflowError:
                return np.inf if v > 0 else -np.inf
            except (TypeError, ValueError):
                return np.nan

        return np.array([one(v) for v in values.tolist()], dtype=np.float64)


def _finite_outputs(out: np.ndarray, x: np.ndarray, spec: dict[str, Any]) -> None:
    """Refuse rows whose output the network could not compute in float32 (NaN or infinite).

    Finite inputs can still overflow inside the network (`3e38` scaled by a small training std);
    such a row is refused, naming the numeric column farthest from its training mean, rather than
    answered with NaN probabilities and an arbitrary label.
    """
    if len(x) == 0:
        return
    bad = ~np.isfinite(np.asarray(out, dtype=np.float64).reshape(len(x), -1)).all(axis=1)
    if not bad.any():
        return
    i = int(np.flatnonzero(bad)[0])
    numeric = [(p, c) for p, c in enumerate(spec["columns"]) if c["kind"] == "numeric"]
    where = ""
    if numeric:
        row = x[i, : len(numeric)].astype(np.float64)
        scaled = np.abs((row - [c["mean"] for _, c in numeric]) / [c["std"] or 1.0 for _, c in numeric])
        j = int(np.argmax(scaled))
        position, col = numeric[j]
        where = (
            f": {_named(col, position, spec)} holds {float(row[j]):.4g}, "
            f"{scaled[j]:.3g} training standard deviations from its mean"
        )
    raise ValueError(
        f"row {i} overflows the network in float32 (its output is not finite){where} "
        f"({int(bad.sum())} such row(s))"
    )


def format_outputs(out: np.ndarray, spec: dict[str, Any]) -> pd.DataFrame:
    """The network's output as named columns: `label` and `probability_<class>`, or `value`."""
    target = spec["target"]
    if spec["task"] == "regression":
        return pd.DataFrame({"value": np.asarray(out, dtype=np.float64).reshape(-1)})
    logits = np.asarray(out, dtype=np.float64)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    proba = shifted / shifted.sum(axis=1, keepdims=True)
    labels = np.asarray(target["labels"], dtype=object)[proba.argmax(axis=1)]
    frame = pd.DataFrame({"label": pd.Series(list(labels), dtype=target["label_dtype"])})
    for i, name in enumerate(target["classes"]):
        frame[f"probability_{name}"] = proba[:, i]
    return frame


class ServedModel(PythonModel):
    """Raw rows (a DataFrame, float or int arrays, the scoring server's parsed requests) in; named outputs out."""

    def load_context(self, context: Any) -> None:
        import torch

        self.spec = json.loads(Path(context.artifacts["preparation"]).read_text())
        program = torch.export.load(str(Path(context.artifacts["network"]) / "model.pt2"))
        self.network = program.module()
        self._torch = torch

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        # Annotated as a DataFrame, MLflow infers no type-hint schema and hands the input over as it
        # came (the signature declares no inputs): encode_rows checks it.
        try:
            x = encode_rows(model_input, self.spec)
        except ValueError as exc:  # a bad request (HTTP 400 from the scoring server), not a fault
            raise MlflowException.invalid_parameter_value(str(exc)) from exc
        with self._torch.no_grad():
            out = self.network(self._torch.from_numpy(x)).numpy()
        try:
            _finite_outputs(out, x, self.spec)
        except ValueError as exc:
            raise MlflowException.invalid_parameter_value(str(exc)) from exc
        return format_outputs(out, self.spec)


# MLflow runs this file under a module name of its own; imported as part of hyperflow it sets nothing.
if __name__ != "hyperflow.components.served_model":
    set_model(ServedModel())
