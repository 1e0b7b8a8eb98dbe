"""Tables refused at load (datafiles.py), each by a DataError naming the column: repeated column names,
numbers beyond float32's range, cells that are lists or dates, and identifier columns under `auto`."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from hyperflow.components.config import DataConfig
from hyperflow.components.datafiles import DataError, RawData, load_raw
from hyperflow.flows.cli import app


def _load(path: Path, **kwargs: Any) -> RawData:
    return load_raw(DataConfig(source="file", path=str(path), **{"target": "y", **kwargs}))


def _table(n: int = 40, **columns: Any) -> pd.DataFrame:
    frame = pd.DataFrame({"a": np.arange(n, dtype=np.float64), "b": np.arange(n) % 7, **columns})
    frame["y"] = np.resize(["c", "d"], n)
    return frame


# --------------------------------------------------------------------------------------------
# Repeated column names


@pytest.mark.parametrize(
    ("header", "repeated"),
    [("a,y,y", "'y'"), ("a,a,b,y", "'a'"), ("a,y,a,y,b", "'a', 'y'")],
    ids=["target", "feature", "both"],
)
def test_a_csv_header_that_repeats_a_name_is_refused(tmp_path: Path, header: str, repeated: str) -> None:
    path = tmp_path / "t.csv"
    width = len(header.split(","))
    path.write_text(
        header + "\n" + "".join(",".join(str(i + j) for j in range(width)) + "\n" for i in range(20))
    )
    with pytest.raises(
        DataError, match=rf"^data\.path: .*t\.csv: the header repeats column name\(s\) {repeated}"
    ):
        _load(path)


def test_a_parquet_file_that_repeats_a_name_is_refused_in_the_same_words(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(
        pa.table([pa.array([1.0, 2.0]), pa.array([3, 4]), pa.array([5, 6])], names=["a", "y", "y"]), path
    )
    with pytest.raises(
        DataError, match=r"^data\.path: .*t\.parquet: the header repeats column name\(s\) 'y'"
    ) as info:
        _load(path)
    assert "FieldRef" not in str(info.value) and "__fragment_index" not in str(info.value)


def test_names_pandas_would_give_a_repeated_column_are_ordinary_names(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    _table(20).rename(columns={"b": "a.1"}).to_csv(path, index=False)
    assert _load(path).feature_names == ["a", "a.1"]


# --------------------------------------------------------------------------------------------
# Numbers beyond float32's range


@pytest.mark.parametrize("value", [1e300, -1e39, 3.5e38], ids=["1e300", "-1e39", "3.5e38"])
def test_a_feature_beyond_float32s_range_is_refused_naming_column_and_row(
    tmp_path: Path, value: float
) -> None:
    path = tmp_path / "t.csv"
    frame = _table(30)
    frame["b"] = frame["b"].astype(np.float64)
    frame.loc[[3, 8], "b"] = value
    frame.to_csv(path, index=False)
    with pytest.raises(
        DataError,
        match=r"^data\.path: .*t\.csv: numbers beyond float32's range \(±3\.403e\+38\) in 2 of 30 rows "
        r"\(feature column\(s\) 'b'; first at row 3 \(counting from 0: line 5 of the file\)",
    ):
        _load(path)


def test_a_column_scaled_past_float32_is_refused_in_a_parquet_file_and_an_npz(tmp_path: Path) -> None:
    parquet = tmp_path / "t.parquet"
    _table(30).assign(a=lambda f: f["a"] * 1e300).to_parquet(parquet)
    with pytest.raises(DataError, match=r"beyond float32's range .*'a'; first at row 1 \(counting from 0\)"):
        _load(parquet)
    npz = tmp_path / "t.npz"
    X = np.ones((30, 2))
    X[4, 1] = 1e39
    np.savez(npz, X=X, y=np.resize([0, 1], 30))
    with pytest.raises(DataError, match=r"beyond float32's range .*'x1'; first at row 4 \(counting from 0\)"):
        load_raw(DataConfig(source="file", path=str(npz)))


def test_numbers_float32_holds_load_and_so_do_large_categories(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    _table(30).assign(a=3.4e38, c=np.resize([1e300, 2e300], 30)).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"'c'; first at row 0"):
        _load(path)
    raw = _load(path, categorical=["c"])  # a category by its text: never fed to the network as a number
    assert raw.feature_names == ["a", "b", "c"] and raw.X["a"].max() == 3.4e38


def test_an_infinite_feature_is_still_refused_as_before(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    _table(30).assign(a=lambda f: f["a"].where(f.index != 6, np.inf)).to_csv(path, index=False)
    with pytest.raises(
        DataError, match=r"NaN or infinite values in 1 of 30 rows \(feature column\(s\) 'a'; first at row 6"
    ):
        _load(path)


def test_a_regression_target_beyond_float32s_range_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    frame = _table(30)
    frame["y"] = np.linspace(0.0, 1.0, 30)
    frame.loc[7, "y"] = 1e200
    frame.to_csv(path, index=False)
    with pytest.raises(
        DataError,
        match=r"^data\.target 'y': numbers beyond float32's range \(±3\.403e\+38\) in 1 of 30 rows of .*t\.csv "
        r"\(first at row 7 \(counting from 0: line 9 of the file\): 1e\+200\)",
    ):
        _load(path)
    npz = tmp_path / "t.npz"
    np.savez(npz, X=np.ones((30, 2)), y=np.where(np.arange(30) == 2, -1e39, 0.5))
    with pytest.raises(DataError, match=r"array 'y': numbers beyond float32's range .*first at row 2"):
        load_raw(DataConfig(source="file", path=str(npz)))


# --------------------------------------------------------------------------------------------
# Cells that are lists, mappings or dates


@pytest.mark.parametrize(
    ("cells", "what"),
    [
        ([[1, 2]] * 40, "lists or arrays"),
        ([{"k": 1}] * 40, "mappings"),
        ([[1, 2]] * 39 + [None], "lists or arrays"),
    ],
    ids=["lists", "structs", "lists-with-a-gap"],
)
def test_a_parquet_column_of_lists_is_refused_by_name(tmp_path: Path, cells: list[Any], what: str) -> None:
    path = tmp_path / "t.parquet"
    _table(40, l=cells).to_parquet(path)
    with pytest.raises(DataError, match=rf"^data\.path: .*t\.parquet: column 'l' holds {what} \(row 0 "):
        _load(path)


def test_a_target_of_lists_is_refused_by_its_field(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pd.DataFrame({"a": np.arange(40.0), "y": [np.array([1, 2])] * 40}).to_parquet(path)
    with pytest.raises(
        DataError,
        match=r"^data\.target 'y' in .*t\.parquet holds lists or arrays \(row 0 \(counting from 0\)",
    ):
        _load(path)


@pytest.mark.parametrize(
    "values",
    [
        pd.date_range("2020-01-01", periods=40, freq="D"),
        pd.date_range("2020-01-01", periods=40, freq="D", tz="Europe/Paris"),
        pd.to_timedelta(np.arange(40), unit="s"),
        [datetime.date(2020, 1, 1) + datetime.timedelta(days=i) for i in range(40)],
        [datetime.time(i % 24, 0) for i in range(40)],
    ],
    ids=["datetime", "datetime-tz", "timedelta", "date", "time"],
)
def test_a_date_or_duration_column_is_refused_with_a_way_on(tmp_path: Path, values: Any) -> None:
    path = tmp_path / "t.parquet"
    _table(40, t=values).to_parquet(path)
    with pytest.raises(
        DataError, match=r"^data\.path: .*t\.parquet: column 't' holds dates, times or durations[ ,]"
    ) as info:
        _load(path)
    assert str(info.value).endswith(
        "convert it to numbers first (e.g. seconds since the epoch, or a duration in seconds)"
    )


# --------------------------------------------------------------------------------------------
# Identifier columns under `data.categorical: auto`


def _ids(tmp_path: Path, n: int, distinct: int) -> Path:
    path = tmp_path / "t.csv"
    _table(n, order_id=[f"ord-{i % distinct:06d}" for i in range(n)]).to_csv(path, index=False)
    return path


def test_a_text_column_of_identifiers_is_refused_under_auto(tmp_path: Path) -> None:
    path = _ids(tmp_path, 2001, 2001)
    with pytest.raises(
        DataError,
        match=r"^data\.path: .*t\.csv: text column 'order_id' has 2001 distinct values in 2001 rows "
        r"\(more than 1000, and more than half the rows\)",
    ) as info:
        _load(path)
    assert "remove the column from the file" in str(info.value) and "data.categorical" in str(info.value)
    raw = _load(path, categorical=["order_id"])  # asked for by name: one-hot encoded as listed
    assert raw.feature_names == ["a", "b", "order_id"]


@pytest.mark.parametrize(("n", "distinct"), [(2400, 1100), (1500, 1000)], ids=["under-half", "1000-values"])
def test_a_categorical_under_either_threshold_loads(tmp_path: Path, n: int, distinct: int) -> None:
    assert _load(_ids(tmp_path, n, distinct)).X["order_id"].nunique() == distinct


# --------------------------------------------------------------------------------------------
# The CLI: exit 2 before any run


def test_validate_refuses_a_repeated_target_column_with_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "t.csv").write_text("a,y,y\n" + "".join(f"{i}.5,{i % 2},{i % 2}\n" for i in range(40)))
    config = tmp_path / "base.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "hunt",
                "data": {"source": "file", "path": "t.csv", "target": "y"},
                "model": {"hidden_layers": [8], "max_epochs": 2},
                "search": {"strategy": "random", "n_trials": 2},
                "early_stopping": {"kind": "none"},
            }
        )
    )
    result = CliRunner().invoke(app, ["validate", str(config)])
    output = result.stdout + result.stderr
    assert result.exit_code == 2, output
    assert "the header repeats column name(s) 'y'" in output, output
    assert "Traceback" not in output
