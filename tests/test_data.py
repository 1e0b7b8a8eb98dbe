"""Tests for components.data: built-in sets, files, task inference, splitting, scaling, errors."""

from __future__ import annotations

import pickle
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from hyperflow.components.config import BUILTIN_TASKS, DataConfig
from hyperflow.components.data import DataError, Dataset, load_arrays, load_dataset

# name: (rows, features, outputs)
BUILTIN_SHAPES = {
    "digits": (1797, 64, 10),
    "breast_cancer": (569, 30, 2),
    "wine": (178, 13, 3),
    "iris": (150, 4, 3),
    "diabetes": (442, 10, 1),
}


def _file_cfg(path: Path, **kwargs: Any) -> DataConfig:
    return DataConfig(source="file", path=str(path), **kwargs)


def _frame(n: int = 60, seed: int = 0, labels: Any = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "a": rng.normal(10.0, 3.0, n),
            "b": rng.integers(0, 100, n),
            "c": rng.normal(-5.0, 0.5, n),
        }
    )
    frame["y"] = labels if labels is not None else rng.choice(["cat", "dog", "ant"], n)
    return frame


def _write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def _split_ids(d: Dataset, column: int = 0) -> list[np.ndarray]:
    """The raw value of one feature column in every row of each split (train, val, test)."""
    return [d.raw_features(X)[:, column] for X in (d.X_train, d.X_val, d.X_test)]


# --------------------------------------------------------------------------------------------
# Built-in sets


@pytest.mark.parametrize("name", sorted(BUILTIN_TASKS))
def test_builtin_set_loads_with_its_task_shapes_and_dtypes(name: str) -> None:
    d = load_dataset(DataConfig(source=name), seed=0)
    rows, features, outputs = BUILTIN_SHAPES[name]

    assert d.name == name
    assert d.source == f"sklearn.datasets.load_{name}"
    assert d.task == BUILTIN_TASKS[name]
    assert d.n_features == features == len(d.feature_names)
    assert d.n_outputs == outputs
    assert len(d.y_train) + len(d.y_val) + len(d.y_test) == rows
    assert len(d.y_val) == round(rows * 0.2) == len(d.y_test)
    for X, y in ((d.X_train, d.y_train), (d.X_val, d.y_val), (d.X_test, d.y_test)):
        assert X.dtype == np.float32
        assert X.shape == (len(y), features)
        assert np.isfinite(X).all()
    assert d.feature_mean.dtype == np.float64 and d.feature_std.dtype == np.float64
    if d.task == "classification":
        assert d.classes is not None and len(d.classes) == outputs
        assert d.y_train.dtype == np.int64
        assert set(np.unique(d.y_train)) == set(range(outputs))
        assert (d.target_mean, d.target_std) == (0.0, 1.0)
    else:
        assert d.classes is None
        assert d.y_train.dtype == np.float32
        assert d.target_std > 1.0  # diabetes progression spans tens of units


def test_builtin_classes_are_the_label_names_by_class_id() -> None:
    assert load_dataset(DataConfig(source="iris"), 0).classes == [
        "setosa",
        "versicolor",
        "virginica",
    ]
    cancer = load_dataset(DataConfig(source="breast_cancer"), 0)
    assert cancer.classes == ["malignant", "benign"]  # scikit-learn's ids, not sorted names
    assert load_dataset(DataConfig(source="digits"), 0).classes == [str(i) for i in range(10)]


def test_diabetes_is_regression_although_its_targets_are_whole_numbers() -> None:
    X, y, names, name, source = load_arrays(DataConfig(source="diabetes"))
    assert np.all(y == np.round(y))
    assert X.shape == (442, 10) and names[0] == "age" and name == "diabetes"
    assert source == "sklearn.datasets.load_diabetes"
    assert load_dataset(DataConfig(source="diabetes"), 0).task == "regression"


def test_explicit_task_overrides_a_builtin_set() -> None:
    d = load_dataset(DataConfig(source="iris", task="regression"), 0)
    assert d.task == "regression" and d.n_outputs == 1 and d.y_train.dtype == np.float32


def test_load_arrays_returns_a_copy_of_the_cached_raw_data() -> None:
    X, y, *_ = load_arrays(DataConfig(source="wine"))
    X[:] = 0.0
    y[:] = 0
    X2, y2, *_ = load_arrays(DataConfig(source="wine"))
    assert X2.std() > 0 and len(np.unique(y2)) == 3


def test_a_built_in_set_is_read_from_disk_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each trial's split of a built-in set reuses the arrays read once (no timing assert: a count)."""
    from sklearn import datasets

    from hyperflow.components import datafiles

    datafiles._builtin.cache_clear()
    reads: list[str] = []
    real = datasets.load_digits

    def counting(*args: Any, **kwargs: Any) -> Any:
        reads.append("digits")
        return real(*args, **kwargs)

    monkeypatch.setattr(datasets, "load_digits", counting)
    splits = [load_dataset(DataConfig(source="digits"), seed) for seed in range(5)]
    assert reads == ["digits"]
    assert not np.array_equal(splits[0].y_train, splits[1].y_train), "each seed still splits anew"


# --------------------------------------------------------------------------------------------
# Standardisation and splitting


def test_standardised_with_train_statistics_only() -> None:
    d = load_dataset(DataConfig(source="diabetes"), seed=3)
    X_all, y_all, *_ = load_arrays(DataConfig(source="diabetes"))

    np.testing.assert_allclose(d.X_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(d.X_train.std(axis=0), 1.0, atol=1e-4)
    np.testing.assert_allclose(d.y_train.mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(d.y_train.std(), 1.0, atol=1e-4)
    # Val and test are scaled by the train statistics, so their own are not exactly 0 and 1.
    assert np.abs(d.X_val.mean(axis=0)).max() > 1e-3
    assert np.abs(d.X_test.std(axis=0) - 1.0).max() > 1e-3
    # The stored statistics are the train rows', not the whole set's.
    train_raw = d.raw_features(d.X_train)
    np.testing.assert_allclose(d.feature_mean, train_raw.mean(axis=0), rtol=1e-4)
    assert not np.allclose(d.feature_mean, X_all.mean(axis=0), rtol=1e-6, atol=0)
    assert d.target_mean != pytest.approx(float(y_all.mean()), rel=1e-9)


def test_raw_features_and_targets_undo_the_scaling() -> None:
    d = load_dataset(DataConfig(source="diabetes"), seed=1)
    X_all, y_all, *_ = load_arrays(DataConfig(source="diabetes"))
    raw = np.concatenate([d.raw_features(X) for X in (d.X_train, d.X_val, d.X_test)])
    targets = np.concatenate([d.raw_targets(y) for y in (d.y_train, d.y_val, d.y_test)])
    order_raw, order_all = np.lexsort(raw.T[::-1]), np.lexsort(X_all.T[::-1])
    np.testing.assert_allclose(raw[order_raw], X_all[order_all], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(np.sort(targets), np.sort(y_all), rtol=1e-5)


def test_constant_feature_gets_std_one_not_a_division_by_zero(tmp_path: Path) -> None:
    frame = _frame(50)
    frame["const"] = 7.5
    d = load_dataset(_file_cfg(_write(frame, tmp_path / "f.csv"), target="y"), 0)
    col = d.feature_names.index("const")
    assert d.feature_std[col] == 1.0 and d.feature_mean[col] == 7.5
    assert np.all(d.X_train[:, col] == 0.0) and np.isfinite(d.X_val).all()


def test_same_seed_same_split_and_another_seed_another(tmp_path: Path) -> None:
    frame = _frame(200)
    frame["a"] = np.arange(200.0)  # a row id
    cfg = _file_cfg(_write(frame, tmp_path / "ids.csv"), target="y")
    first, again, other = (load_dataset(cfg, s) for s in (7, 7, 8))
    for x, y in zip(_split_ids(first), _split_ids(again), strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(first.y_val, again.y_val)
    assert not np.array_equal(_split_ids(first)[2], _split_ids(other)[2])
    # The three splits partition the rows.
    ids = np.concatenate(_split_ids(first))
    np.testing.assert_allclose(np.sort(ids), np.arange(200.0), atol=1e-3)
    assert first.digest == other.digest


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stratified_split_keeps_class_proportions(tmp_path: Path, seed: int) -> None:
    labels = np.repeat(["rare", "mid", "common"], [20, 60, 220])
    frame = _frame(300, labels=labels)
    d = load_dataset(_file_cfg(_write(frame, tmp_path / "s.csv"), target="y"), seed)
    assert d.classes == ["common", "mid", "rare"]
    overall = np.array([220, 60, 20]) / 300
    for y in (d.y_train, d.y_val, d.y_test):
        share = np.bincount(y, minlength=3) / len(y)
        # within one row of the exact proportion in every split
        assert np.all(np.abs(share - overall) <= 1.0 / len(y) + 1e-9), share


def test_small_classes_still_reach_train(tmp_path: Path) -> None:
    labels = ["a"] * 40 + ["b"] * 40 + ["c", "c"]
    d = load_dataset(_file_cfg(_write(_frame(82, labels=labels), tmp_path / "t.csv"), target="y"), 0)
    assert set(np.unique(d.y_train)) == {0, 1, 2}


def test_dataset_pickles_and_describes_itself() -> None:
    d = load_dataset(DataConfig(source="wine"), 4)
    back = pickle.loads(pickle.dumps(d))
    np.testing.assert_array_equal(back.X_test, d.X_test)
    np.testing.assert_array_equal(back.y_train, d.y_train)
    assert back.classes == d.classes and back.digest == d.digest
    assert (
        back.describe()
        == d.describe()
        == {
            "name": "wine",
            "source": "sklearn.datasets.load_wine",
            "task": "classification",
            "digest": d.digest,
            "n_rows": {"train": 106, "val": 36, "test": 36},
            "n_features": 13,
            "n_outputs": 3,
            "classes": ["class_0", "class_1", "class_2"],
        }
    )
    assert re.fullmatch(r"[0-9a-f]{16}", d.digest)


# --------------------------------------------------------------------------------------------
# Files


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_table_file_with_string_labels(tmp_path: Path, suffix: str) -> None:
    frame = _frame(90)
    path = _write(frame, tmp_path / f"animals{suffix}")
    d = load_dataset(_file_cfg(path, target="y"), 0)

    assert d.name == "animals" and d.source == str(path.resolve())
    assert d.task == "classification"
    assert d.classes == ["ant", "cat", "dog"]
    assert d.feature_names == ["a", "b", "c"]
    # Decoding the class ids gives back each row's label (rows found by their nearest raw 'a').
    raw_a = frame["a"].to_numpy()
    for X, y in ((d.X_train, d.y_train), (d.X_test, d.y_test)):
        a = d.raw_features(X)[:, 0].astype(np.float64)
        rows = np.abs(a[:, None] - raw_a[None, :]).argmin(axis=1)
        assert len(set(rows)) == len(rows)
        assert [d.classes[i] for i in y] == frame["y"].to_numpy()[rows].tolist()
    X, y, names, name, source = load_arrays(_file_cfg(path, target="y"))
    assert X.dtype == np.float64 and X.shape == (90, 3) and list(y) == list(frame["y"])
    assert (names, name, source) == (["a", "b", "c"], "animals", str(path.resolve()))


def test_npz_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 5))
    y = (X[:, 0] > 0).astype(np.int64)
    path = tmp_path / "arrays.npz"
    np.savez(path, X=X, y=y)
    d = load_dataset(_file_cfg(path), 0)
    assert d.task == "classification" and d.classes == ["0", "1"]
    assert d.feature_names == [f"x{i}" for i in range(5)] and d.name == "arrays"
    np.savez(path, X=X, y=X[:, 1] * 3.0, feature_names=np.array(list("abcde")))
    d = load_dataset(_file_cfg(path), 0)
    assert d.task == "regression" and d.feature_names == list("abcde")


def test_npz_target_names_the_label_array(tmp_path: Path) -> None:
    X = np.arange(60.0).reshape(30, 2)
    np.savez(tmp_path / "t.npz", X=X, y=np.zeros(30), label=np.resize(["u", "v", "w"], 30))
    d = load_dataset(_file_cfg(tmp_path / "t.npz", target="label"), 0)
    assert d.classes == ["u", "v", "w"] and d.task == "classification"


def test_npz_string_and_boolean_labels(tmp_path: Path) -> None:
    X = np.arange(40.0).reshape(20, 2)
    np.savez(tmp_path / "s.npz", X=X, y=np.array(["yes", "no"] * 10))
    np.savez(tmp_path / "b.npz", X=X, y=np.array([True, False] * 10))
    assert load_dataset(_file_cfg(tmp_path / "s.npz"), 0).classes == ["no", "yes"]
    assert load_dataset(_file_cfg(tmp_path / "b.npz"), 0).classes == ["False", "True"]


def _labels(n: int, values: Any) -> np.ndarray:
    return np.resize(np.asarray(values), n)


@pytest.mark.parametrize(
    ("labels", "task", "expected", "classes"),
    [
        pytest.param(_labels(100, ["x", "y"]), "auto", "classification", ["x", "y"], id="strings"),
        pytest.param(_labels(100, [True, False]), "auto", "classification", None, id="booleans"),
        pytest.param(_labels(100, [2, 10, 1]), "auto", "classification", ["1", "2", "10"], id="few-ints"),
        pytest.param(_labels(100, range(20)), "auto", "classification", None, id="20-ints"),
        pytest.param(_labels(100, [0.0, 1.0]), "auto", "classification", ["0", "1"], id="whole-floats"),
        pytest.param(_labels(1000, range(21)), "auto", "regression", None, id="21-ints"),
        pytest.param(np.arange(100) * 7, "auto", "regression", None, id="many-ints"),
        pytest.param(_labels(15, range(4)), "auto", "regression", None, id="too-few-rows-per-value"),
        pytest.param(_labels(100, [0.5, 1.5]), "auto", "regression", None, id="fractions"),
        pytest.param(_labels(100, [0, 1]), "regression", "regression", None, id="explicit-regression"),
        pytest.param(
            _labels(200, np.arange(100) * 7),
            "classification",
            "classification",
            None,
            id="explicit-classification",
        ),
    ],
)
def test_task_inference(labels: np.ndarray, task: str, expected: str, classes: Any, tmp_path: Path) -> None:
    path = _write(_frame(len(labels), labels=labels), tmp_path / "t.parquet")
    d = load_dataset(_file_cfg(path, target="y", task=task), 0)
    assert d.task == expected
    if classes is not None:
        assert d.classes == classes
    if expected == "regression":
        assert d.y_train.dtype == np.float32 and d.n_outputs == 1
        assert abs(float(d.y_train.mean())) < 1e-5
    else:
        assert d.n_outputs == len(np.unique(labels))


def test_integer_regression_targets_stay_regression_in_csv(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    frame = _frame(300, labels=rng.integers(25, 350, 300))  # like diabetes progression
    d = load_dataset(_file_cfg(_write(frame, tmp_path / "r.csv"), target="y"), 0)
    assert d.task == "regression" and d.classes is None
    train_y = d.raw_targets(d.y_train)
    np.testing.assert_allclose(train_y, np.round(train_y), atol=1e-3)


def test_digest_follows_the_data(tmp_path: Path) -> None:
    frame = _frame(50)
    path = _write(frame, tmp_path / "d.csv")
    first = load_dataset(_file_cfg(path, target="y"), 0).digest
    assert load_dataset(_file_cfg(path, target="y"), 1).digest == first
    frame.loc[3, "a"] += 1.0
    _write(frame, path)
    assert load_dataset(_file_cfg(path, target="y"), 0).digest != first


# --------------------------------------------------------------------------------------------
# Errors: each names the field or the file

ErrorCase = Callable[[Path], DataConfig]


def _csv(frame: pd.DataFrame, **kwargs: Any) -> ErrorCase:
    def build(tmp: Path) -> DataConfig:
        return _file_cfg(_write(frame, tmp / "bad.csv"), **{"target": "y", **kwargs})

    return build


def _npz(**arrays: Any) -> ErrorCase:
    def build(tmp: Path) -> DataConfig:
        np.savez(tmp / "bad.npz", **arrays)
        return _file_cfg(tmp / "bad.npz")

    return build


def _raw_file(name: str, content: bytes, **kwargs: Any) -> ErrorCase:
    def build(tmp: Path) -> DataConfig:
        (tmp / name).write_bytes(content)
        return _file_cfg(tmp / name, **kwargs)

    return build


def _with(frame: pd.DataFrame, column: str, row: int, value: Any) -> pd.DataFrame:
    frame = frame.copy()
    if column == "y":
        frame[column] = frame[column].astype(object)
    frame.loc[row, column] = value
    return frame


_X = np.random.default_rng(0).normal(size=(30, 3))
_Y = np.resize([0, 1, 2], 30)

ERROR_CASES = [
    pytest.param(lambda t: DataConfig(source="file"), r"^data\.path: required", False, id="no-path"),
    pytest.param(
        lambda t: _file_cfg(t / "missing.csv", target="y"),
        r"^data\.path: .*missing\.csv: no such file",
        True,
        id="missing-file",
    ),
    pytest.param(
        _raw_file("data.txt", b"a,b\n1,2\n", target="b"),
        r"^data\.path: .*unsupported file type '\.txt'",
        True,
        id="unsupported-extension",
    ),
    pytest.param(
        _raw_file("e.csv", b"", target="y"),
        r"^data\.path: .*e\.csv: the file is empty",
        True,
        id="empty-csv",
    ),
    pytest.param(
        _raw_file("e.npz", b"", target=None),
        r"^data\.path: .*the file is empty",
        True,
        id="empty-npz",
    ),
    pytest.param(
        _raw_file("h.csv", b"a,b,y\n", target="y"),
        r"^data\.path: .*h\.csv: no rows",
        True,
        id="header-only",
    ),
    pytest.param(
        _raw_file("bad.parquet", b"not parquet at all", target="y"),
        r"^data\.path: .*cannot read",
        True,
        id="corrupt-parquet",
    ),
    pytest.param(
        _csv(_frame(30), target=None),
        r"^data\.target: required .*columns: a, b, c, y",
        False,
        id="no-target",
    ),
    pytest.param(
        _csv(_frame(30), target="label"),
        r"^data\.target: 'label' is not a column of .*bad\.csv \(columns: a, b, c, y\)",
        True,
        id="missing-target-column",
    ),
    pytest.param(
        _npz(features=_X, y=_Y),
        r"^data\.path: .*no array 'X' \(arrays: features, y\)",
        True,
        id="npz-no-X",
    ),
    pytest.param(
        _npz(X=_X, labels=_Y),
        r"^data\.path: .*no array 'y' \(arrays: X, labels\)",
        True,
        id="npz-no-y",
    ),
    pytest.param(
        _raw_file("c.npz", b"not a zip archive", target=None),
        r"^data\.path: .*c\.npz: not an \.npz archive",
        True,
        id="corrupt-npz",
    ),
    pytest.param(
        _npz(X=_X, y=np.array([{"a": 1}] * 30, dtype=object)),
        r"^data\.path: .*cannot read the file: .*store strings as a unicode array",
        True,
        id="npz-object-labels",
    ),
    pytest.param(
        lambda t: _npz(X=_X, y=_Y)(t).model_copy(update={"target": "label"}),
        r"^data\.target: no array 'label' in .*bad\.npz \(arrays: X, y\)",
        True,
        id="npz-missing-target-array",
    ),
    pytest.param(_npz(X=_X[:, 0], y=_Y), r"^data\.path: .*X must be 2-D", True, id="npz-X-1d"),
    pytest.param(
        _npz(X=_X, y=_Y[:29]),
        r"^data\.path: .*X has 30 rows but y has 29",
        True,
        id="length-mismatch",
    ),
    pytest.param(
        _csv(_with(_with(_frame(30), "b", 4, np.nan), "c", 9, np.nan), missing="error"),
        r"^data\.path: .*bad\.csv: NaN or infinite values in 2 of 30 rows "
        r"\(feature column\(s\) 'b', 'c'; first at row 4 \(counting from 0: line 6 of the file\)\); fill or drop them first, or set data\.missing",
        True,
        id="gaps-with-missing-error",
    ),
    pytest.param(
        _csv(
            _with(_frame(30).assign(color="red").astype({"color": object}), "color", 7, None), missing="error"
        ),
        r"^data\.path: .*NaN or infinite values in 1 of 30 rows \(feature column\(s\) 'color'; first at row 7 "
        r"\(counting from 0: line 9 of the file\)\)",
        True,
        id="string-gap-with-missing-error",
    ),
    pytest.param(
        _csv(_with(_frame(30).astype({"b": object}), "b", 7, "abc")),
        r"^data\.path: .*bad\.csv: column 'b' holds numbers in 29 of its 30 filled rows but 'abc' at row 7 "
        r"\(counting from 0: line 9 of the file\) \(1 such row\(s\)\); fix those cells, or list the column in "
        r"data\.categorical",
        True,
        id="typo-in-a-numeric-column",
    ),
    pytest.param(
        _csv(_frame(30).assign(b=np.nan), missing="drop"),
        r"^data\.missing: drop leaves no rows of .*bad\.csv: every row has a gap \(columns with gaps: 'b'\)",
        True,
        id="drop-leaves-no-rows",
    ),
    pytest.param(
        _csv(_frame(30), categorical=["a", "nope"]),
        r"^data\.categorical: 'nope' are not feature column\(s\) of .*bad\.csv \(feature columns: 'a', 'b', 'c'\)",
        True,
        id="categorical-unknown-column",
    ),
    pytest.param(
        _npz(X=np.where(np.arange(90).reshape(30, 3) == 7, np.inf, _X), y=_Y),
        r"^data\.path: .*NaN or infinite values in 1 of 30 rows "
        r"\(feature column\(s\) 'x1'; first at row 2 \(counting from 0\)\)",
        True,
        id="inf-feature-npz",
    ),
    pytest.param(
        _csv(_with(_frame(30), "y", 5, None)),
        r"^data\.target 'y': missing \(NaN\) or infinite labels in 1 of 30 rows",
        True,
        id="nan-label",
    ),
    pytest.param(
        _npz(X=_X, y=np.where(_Y == 2, np.nan, _Y)),
        r"^data\.path .*array 'y': missing \(NaN\) or infinite labels in 10 of 30",
        True,
        id="nan-label-npz",
    ),
    pytest.param(
        _csv(_frame(30).assign(color="red", size="L"), categorical=["a"]),
        r"^data\.categorical: feature column\(s\) 'color', 'size' of .*bad\.csv are not numeric; list them",
        True,
        id="strings-left-out-of-categorical",
    ),
    pytest.param(_npz(X=_X.astype(str), y=_Y), r"^data\.path: .*X is not numeric", True, id="npz-X-strings"),
    pytest.param(
        _csv(_frame(30)[["y"]]),
        r"^data\.path: .*no feature columns besides the target 'y'",
        True,
        id="no-features",
    ),
    pytest.param(
        _csv(_frame(30, labels="only")),
        r"^data\.target 'y': a single class \('only' in all 30 rows\)",
        False,
        id="single-class",
    ),
    pytest.param(
        _csv(_frame(4, labels=[1.0, 2.5, 3.0, 4.5]), val_fraction=0.4, test_fraction=0.4),
        r"^data\.path: .*bad\.csv: 4 rows are too few to split .*the train split\(s\) would be",
        True,
        id="empty-train",
    ),
    pytest.param(
        _csv(_frame(2, labels=[1.0, 2.5])),
        r"^data\.path: .*2 rows are too few .*val and test split",
        True,
        id="empty-val-and-test",
    ),
    pytest.param(
        _csv(_frame(30), val_fraction=0.5, test_fraction=0.5),
        r"^data\.val_fraction \+ data\.test_fraction = 1 leaves no training data",
        False,
        id="fractions-leave-no-train",
    ),
    pytest.param(
        _csv(_frame(30, labels=np.linspace(0, 1, 30)), task="classification"),
        r"^data\.task: classification needs discrete labels, but data\.target 'y' has non-integer "
        r"values \(e\.g\. 0\.034482758620689655\); use task: regression",
        False,
        id="classification-of-floats",
    ),
    pytest.param(
        _csv(_frame(30), task="regression"),
        r"^data\.task: regression needs numeric labels, but data\.target 'y' holds strings",
        False,
        id="regression-of-strings",
    ),
    pytest.param(
        _csv(_frame(31, labels=["a"] * 15 + ["b"] * 15 + ["z"])),
        r"^data\.target 'y': class 'z' has 1 row; a stratified split "
        r".*rows per class: a=15, b=15, z=1",
        False,
        id="class-too-rare",
    ),
    pytest.param(
        _csv(_frame(12, labels=list("aabbccddeeff")), val_fraction=0.4, test_fraction=0.4),
        r"train split would have \d rows, fewer than the 6 classes",
        False,
        id="train-smaller-than-classes",
    ),
    pytest.param(
        lambda t: DataConfig(module="pkg.mod:DM"),
        r"^data\.module: 'pkg\.mod:DM'",
        False,
        id="data-module",
    ),
]


@pytest.mark.parametrize(("build", "match", "names_file"), ERROR_CASES)
def test_bad_data_raises_data_error_naming_the_field(
    build: ErrorCase, match: str, names_file: bool, tmp_path: Path
) -> None:
    cfg = build(tmp_path)
    with pytest.raises(DataError, match=match) as info:
        load_dataset(cfg, seed=0)
    assert isinstance(info.value, ValueError)
    if names_file:
        assert Path(str(cfg.path)).name in str(info.value)


def test_explicit_classification_of_diabetes_names_the_rare_classes() -> None:
    with pytest.raises(DataError, match=r"^data\.source 'diabetes': the labels: class '\d+' has 1 row"):
        load_dataset(DataConfig(source="diabetes", task="classification"), 0)


def test_load_arrays_checks_the_file_too(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"^data\.path: .*nope\.parquet: no such file"):
        load_arrays(_file_cfg(tmp_path / "nope.parquet", target="y"))


def test_a_run_reads_its_data_file_once_and_a_changed_file_again(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """preflight loads the data before any run exists; the flow's prepare-data gets the same data set."""
    import os

    import hyperflow.components.datafiles as data_module
    from hyperflow.components.config import validate_config
    from hyperflow.components.preflight import preflight

    path = tmp_path / "rows.csv"
    pd.DataFrame({"a": np.arange(40.0), "b": np.arange(40.0) % 7, "y": np.resize([0, 1, 2], 40)}).to_csv(
        path, index=False
    )
    reads: list[Path] = []
    read_frame = data_module._read_frame
    monkeypatch.setattr(
        data_module, "_read_frame", lambda p, nrows=None: reads.append(p) or read_frame(p, nrows)
    )
    cfg = validate_config({"data": {"source": "file", "path": str(path), "target": "y"}})
    checked = preflight(cfg, check_tracking=False)
    assert load_dataset(cfg.data, cfg.seed) is checked and len(reads) == 1, "prepare-data reuses it"
    assert load_dataset(cfg.data, cfg.seed + 1) is not checked, "another split is another data set"
    before = len(reads)
    pd.read_csv(path).head(30).to_csv(path, index=False)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    changed = load_dataset(cfg.data, cfg.seed + 1)
    assert len(reads) == before + 1 and sum(changed.describe()["n_rows"].values()) == 30
