"""Data preparation: impute, one-hot encode and standardise the features, fitted on the train split only.

A scikit-learn ColumnTransformer prepares the training data; what it learnt (fill values,
categories, means and scales) is kept as JSON (`Preparation.spec`), which the served model
(`served_model.py`) applies to raw rows and the study logs as `data/preparation.json`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from hyperflow.components.served_model import category_strings, encode_rows

__all__ = ["Preparation", "categorical_columns", "fit_preparation"]

Layout = Literal["table", "array"]


def categorical_columns(frame: pd.DataFrame, requested: str | list[str]) -> list[str]:
    """The columns one-hot encoded: `auto` takes string, boolean and category columns; else the names."""
    if requested != "auto":
        return [c for c in frame.columns if c in set(requested)]
    return [
        str(c)
        for c, dtype in frame.dtypes.items()
        if not pd.api.types.is_numeric_dtype(dtype)
        or pd.api.types.is_bool_dtype(dtype)
        or isinstance(dtype, pd.CategoricalDtype)
    ]


@dataclass(frozen=True, eq=False)
class Preparation:
    """A fitted preparation: the ColumnTransformer and its JSON description.

    Attributes:
        transformer: the fitted `ColumnTransformer` (numeric: median imputation + standardisation;
            categorical: most-frequent imputation + one-hot, unseen categories all zeros).
        spec: the JSON-ready description (`columns`, `features`, `layout`, counts imputed) that the
            served model applies; `task` and `target` are added by the data set.
        feature_mean: float64 mean of each prepared column before scaling (0 for one-hot columns).
        feature_std: float64 scale of each prepared column (1 for one-hot and constant columns).
    """

    transformer: Any
    spec: dict[str, Any]
    feature_mean: np.ndarray
    feature_std: np.ndarray

    @property
    def feature_names(self) -> list[str]:
        """The prepared columns: numeric names, then `<column>_<category>` per category."""
        return list(self.spec["features"])

    @property
    def input_columns(self) -> list[str]:
        """The raw columns the preparation reads, in the table's order."""
        return [c["name"] for c in self.spec["columns"]]

    def transform(self, rows: pd.DataFrame) -> np.ndarray:
        """Prepared float32 rows (filled, encoded and standardised), through the fitted transformer."""
        return np.asarray(self.transformer.transform(_model_input(rows, self.spec)), dtype=np.float32)

    def encode(self, rows: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Filled and encoded rows before the scaling, from the JSON alone: what the served model does."""
        return encode_rows(rows, self.spec)


def fit_preparation(
    train: pd.DataFrame,
    *,
    categorical: list[str],
    layout: Layout,
    n_missing: dict[str, int],
    missing: str,
) -> Preparation:
    """Fit the ColumnTransformer on the training rows and describe it as JSON.

    Args:
        train: the raw feature columns of the training split.
        categorical: the columns to one-hot encode; the others are numeric.
        layout: `table` (named columns: csv/parquet) or `array` (positional: built-in sets, npz).
        n_missing: gaps per column in the whole table (what `missing: impute` fills).
        missing: the `data.missing` policy, recorded in the description.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    names = [str(c) for c in train.columns]
    numeric = [c for c in names if c not in categorical]
    cats = [c for c in names if c in categorical]
    kinds = {c: ("categorical" if c in cats else "numeric") for c in names}
    draft = {"layout": layout, "columns": [{"name": c, "kind": kinds[c]} for c in names]}
    positional = layout == "array" and not cats
    # With no gap in any numeric column the fill values only serve later rows: numpy's nanmedian
    # gives the same train median as SimpleImputer, whose masked-array median costs ~30 ms on digits.
    numeric_gaps = any(n_missing.get(c, 0) for c in numeric)
    steps: list[tuple[str, Any, list[Any]]] = []
    if numeric:
        numeric_steps: list[tuple[str, Any]] = [("scale", StandardScaler())]
        if numeric_gaps:
            numeric_steps.insert(0, ("impute", SimpleImputer(strategy="median", keep_empty_features=True)))
        steps.append(
            (
                "numeric",
                Pipeline(numeric_steps),
                [names.index(c) for c in numeric] if positional else numeric,
            )
        )
    if cats:
        steps.append(
            (
                "categorical",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="most_frequent", keep_empty_features=True)),
                        (
                            "onehot",
                            OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float64),
                        ),
                    ]
                ),
                cats,
            )
        )
    transformer = ColumnTransformer(steps, verbose_feature_names_out=False)
    transformer.fit(_model_input(train, draft))

    columns: dict[str, dict[str, Any]] = {}
    mean: list[float] = []
    std: list[float] = []
    if numeric:
        pipe = transformer.named_transformers_["numeric"]
        scaler = pipe.named_steps["scale"]
        if numeric_gaps:
            fills = pipe.named_steps["impute"].statistics_
        else:
            fills = np.nanmedian(train[numeric].to_numpy(dtype=np.float64), axis=0)
        for i, c in enumerate(numeric):
            columns[c] = {
                "name": c,
                "kind": "numeric",
                "dtype": "boolean" if pd.api.types.is_bool_dtype(train[c]) else "double",
                "fill": float(fills[i]),
                "mean": float(scaler.mean_[i]),
                "std": float(scaler.scale_[i]),
            }
        mean += [float(v) for v in scaler.mean_]
        std += [float(v) for v in scaler.scale_]
    if cats:
        pipe = transformer.named_transformers_["categorical"]
        fills, encoder = pipe.named_steps["impute"].statistics_, pipe.named_steps["onehot"]
        for i, c in enumerate(cats):
            categories = [str(v) for v in encoder.categories_[i]]
            columns[c] = {
                "name": c,
                "kind": "categorical",
                "dtype": _served_dtype(train[c]),
                "fill": str(fills[i]),
                "categories": categories,
            }
            mean += [0.0] * len(categories)
            std += [1.0] * len(categories)
    for c in names:
        columns[c]["n_missing"] = int(n_missing.get(c, 0))
        columns[c]["treatment"] = (
            "median fill, standardised" if kinds[c] == "numeric" else "most-frequent fill, one-hot"
        )
    spec: dict[str, Any] = {
        "format": 1,
        "layout": layout,
        "missing": missing,
        "columns": [columns[c] for c in names],
        "features": _feature_names(numeric, transformer, cats),
        "n_imputed": int(sum(n_missing.values())) if missing == "impute" else 0,
    }
    return Preparation(
        transformer=transformer,
        spec=spec,
        feature_mean=np.asarray(mean, dtype=np.float64),
        feature_std=np.asarray(std, dtype=np.float64),
    )


def _served_dtype(values: pd.Series) -> str:
    """A categorical column's type in MLflow's names (recorded in preparation.json): what a reader gives back."""
    if pd.api.types.is_bool_dtype(values):
        return "boolean"
    if pd.api.types.is_numeric_dtype(values) and not isinstance(values.dtype, pd.CategoricalDtype):
        return "double"
    return "string"


def _feature_names(numeric: list[str], transformer: Any, cats: list[str]) -> list[str]:
    """The network's inputs by name, one each: the numeric columns, then `<column>_<category>`.

    Where that one-hot name is also a numeric column's, or another one-hot column's (`a` with `x`
    and a column `a_x`), it is `<column>=<category>` instead, so that no two inputs share a name.
    """
    onehot = _names_out(transformer)
    if not cats:
        return list(numeric)
    encoder = transformer.named_transformers_["categorical"].named_steps["onehot"]
    pairs = [(c, str(v)) for c, values in zip(cats, encoder.categories_, strict=True) for v in values]
    taken = numeric + onehot
    return numeric + [
        name if taken.count(name) == 1 else f"{column}={category}"
        for name, (column, category) in zip(onehot, pairs, strict=True)
    ]


def _names_out(transformer: Any) -> list[str]:
    """The one-hot columns' names, `<column>_<category>` (the numeric ones keep theirs)."""
    if "categorical" not in transformer.named_transformers_:
        return []
    pipe = transformer.named_transformers_["categorical"]
    return [str(f) for f in pipe.named_steps["onehot"].get_feature_names_out(pipe.feature_names_in_)]


def _model_input(rows: pd.DataFrame, spec: dict[str, Any]) -> pd.DataFrame | np.ndarray:
    """Numeric columns as float64, categorical ones as strings (NaN for gaps): the transformer's input.

    All-numeric array data goes in as one float64 array (pandas frames cost sklearn a check per column).
    """
    if spec["layout"] == "array" and all(c["kind"] == "numeric" for c in spec["columns"]):
        return rows.to_numpy(dtype=np.float64, na_value=np.nan)
    frame = rows.reindex(columns=[c["name"] for c in spec["columns"]])  # an absent column: all gaps
    for col in spec["columns"]:
        name = col["name"]
        if col["kind"] == "categorical":
            frame[name] = category_strings(frame[name])
        elif frame[name].dtype != np.float64:
            frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(np.float64)
    return frame
