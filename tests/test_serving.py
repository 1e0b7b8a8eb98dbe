"""The champion as users score it: mlflow.pyfunc in-process and `mlflow models serve` over HTTP.

Array data (digits) and a penguins-like table (two string columns, a string target, about 3% empty
cells, written here from scikit-learn's iris) are prepared, trained for real, logged as the pyfunc
`best_model` and scored with raw rows: float64, float32, int64, DataFrames, CSV, JSON and parquet.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import mlflow.pytorch
import numpy as np
import pandas as pd
import pytest
import torch
from servers import BIN, base_env, free_port, stop, wait_http

from hyperflow.components.adapters._base import raw_example, scoring_model
from hyperflow.components.config import DataConfig
from hyperflow.components.data import Dataset, load_dataset
from hyperflow.components.lifecycle import served_inputs
from hyperflow.components.registry import save_served_model

# --------------------------------------------------------------------------------------------
# Data and models


def penguins_like(path: Path, seed: int = 0) -> Path:
    """iris as a field table: `island` and `sex` strings, `species` names, ~3% of feature cells empty."""
    from sklearn.datasets import load_iris

    iris = load_iris(as_frame=True)
    rng = np.random.default_rng(seed)
    frame = iris.frame.drop(columns="target").set_axis(
        ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"], axis=1
    )
    # island tells the species apart (a useful string column); sex is noise.
    islands = np.array(["Torgersen", "Dream", "Biscoe"])[iris.target]
    flip = rng.random(len(frame)) < 0.15
    frame["island"] = np.where(flip, rng.choice(islands, len(frame)), islands)
    frame["sex"] = rng.choice(["male", "female"], len(frame))
    frame["body_mass_g"] = (frame["body_mass_g"] * 1000).round().astype("Int64")  # an int column
    frame["species"] = iris.target_names[iris.target]
    cells = rng.random((len(frame), 6)) < 0.03
    for j, column in enumerate(frame.columns[:6]):
        frame.loc[cells[:, j], column] = None
    frame.to_csv(path, index=False)
    return path


def table_config(path: Path, **data: Any) -> DataConfig:
    return DataConfig(source="file", path=str(path), target="species", **data)


def fit_network(data: Dataset, epochs: int = 60) -> torch.nn.Module:
    """A small MLP trained full-batch on the prepared train split: real training, a fraction of a second."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(data.n_features, 32), torch.nn.ReLU(), torch.nn.Linear(32, data.n_outputs)
    )
    x, y = torch.as_tensor(data.X_train), torch.as_tensor(data.y_train)
    loss_fn = torch.nn.CrossEntropyLoss() if data.task == "classification" else torch.nn.MSELoss()
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(epochs):
        opt.zero_grad()
        out = net(x)
        loss = loss_fn(out, y) if data.task == "classification" else loss_fn(out.squeeze(-1), y)
        loss.backward()
        opt.step()
    return net.eval()


def save_model(data: Dataset, folder: Path) -> Path:
    model = scoring_model(fit_network(data), data)
    save_served_model(model, raw_example(data), path=folder, **served_inputs(data))
    return folder


@pytest.fixture(scope="module")
def digits_model(digits: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_model(digits, tmp_path_factory.mktemp("digits") / "best_model")


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return load_dataset(table_config(penguins_like(tmp_path_factory.mktemp("table") / "penguins.csv")), 0)


@pytest.fixture(scope="module")
def table_model(table: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_model(table, tmp_path_factory.mktemp("table-model") / "best_model")


def probabilities(frame: pd.DataFrame) -> np.ndarray:
    return frame[[c for c in frame.columns if c.startswith("probability_")]].to_numpy()


# --------------------------------------------------------------------------------------------
# The preparation


def test_a_table_with_strings_and_gaps_is_prepared_on_the_train_split(table: Dataset) -> None:
    spec = table.preparation.spec
    columns = {c["name"]: c for c in spec["columns"]}
    assert [c for c, v in columns.items() if v["kind"] == "categorical"] == ["island", "sex"]
    assert columns["island"]["categories"] == ["Biscoe", "Dream", "Torgersen"]
    assert table.feature_names[-5:] == [
        "island_Biscoe",
        "island_Dream",
        "island_Torgersen",
        "sex_female",
        "sex_male",
    ]
    assert table.n_features == 4 + 3 + 2
    raw = pd.read_csv(table.source)
    assert spec["n_imputed"] == int(raw.drop(columns="species").isna().sum().sum()) > 0
    assert columns["bill_length_mm"]["n_missing"] == int(raw["bill_length_mm"].isna().sum())
    assert table.classes == ["setosa", "versicolor", "virginica"] and table.labels == table.classes
    # the fill value is the train split's median, not the whole table's
    train_rows = table.preparation.transformer.named_transformers_["numeric"]
    fills = dict(zip(train_rows.feature_names_in_, train_rows.named_steps["impute"].statistics_, strict=True))
    assert columns["bill_length_mm"]["fill"] == pytest.approx(fills["bill_length_mm"])
    assert np.isfinite(table.X_train).all() and np.isfinite(table.X_test).all()
    numeric = table.X_train[:, :4]
    np.testing.assert_allclose(numeric.mean(axis=0), 0, atol=1e-5)  # standardised on the train split
    assert set(np.unique(table.X_train[:, 4:])) <= {0.0, 1.0}  # one-hot columns left 0/1


def test_the_served_preparation_is_the_fitted_column_transformer(table: Dataset) -> None:
    rows = table.test_rows.copy()
    rows.loc[0, "island"] = "Atlantis"  # unseen in training
    rows.loc[1, ["bill_length_mm", "sex"]] = [np.nan, None]
    prep = table.preparation
    served = (prep.encode(rows) - table.feature_mean) / table.feature_std
    np.testing.assert_allclose(served, prep.transform(rows), atol=1e-5)
    island = [i for i, f in enumerate(table.feature_names) if f.startswith("island_")]
    assert served[0, island].tolist() == [0.0, 0.0, 0.0]  # none of the known islands
    fill = next(c["fill"] for c in prep.spec["columns"] if c["name"] == "bill_length_mm")
    assert prep.encode(rows)[1, 0] == pytest.approx(fill)
    # a categorical column left out is all gaps: the train split's most frequent value
    sex = {f: i for i, f in enumerate(table.feature_names) if f.startswith("sex_")}
    most_frequent = next(c["fill"] for c in prep.spec["columns"] if c["name"] == "sex")
    left_out = prep.encode(rows.drop(columns="sex"))[:, list(sex.values())]
    assert left_out.tolist() == [[float(f == f"sex_{most_frequent}") for f in sex]] * len(rows)


def test_a_numeric_column_named_in_data_categorical_is_one_hot_by_its_values(table: Dataset) -> None:
    cfg = table_config(Path(table.source), categorical=["island", "sex", "body_mass_g"])
    prepared = load_dataset(cfg, 0)
    column = next(c for c in prepared.preparation.spec["columns"] if c["name"] == "body_mass_g")
    assert column["kind"] == "categorical" and column["dtype"] == "double"
    masses = pd.read_csv(table.source)["body_mass_g"].dropna()
    assert set(column["categories"]) <= {str(int(v)) for v in masses}  # 200, not 200.0
    assert prepared.n_features == 3 + len(column["categories"]) + 3 + 2
    rows = prepared.test_rows.iloc[:2].astype({"body_mass_g": np.float64})  # 200.0 is category "200"
    np.testing.assert_allclose(
        prepared.preparation.encode(rows), prepared.preparation.encode(prepared.test_rows.iloc[:2])
    )


def test_missing_drop_leaves_out_the_rows_with_gaps(table: Dataset, tmp_path: Path) -> None:
    raw = pd.read_csv(table.source)
    dropped = load_dataset(table_config(Path(table.source), missing="drop"), 0)
    gaps = int(raw.drop(columns="species").isna().any(axis=1).sum())
    assert dropped.preparation.spec["n_dropped"] == gaps > 0
    assert sum(len(y) for y in (dropped.y_train, dropped.y_val, dropped.y_test)) == len(raw) - gaps


def test_missing_error_refuses_the_table_naming_columns_and_the_first_row(table: Dataset) -> None:
    from hyperflow.components.data import DataError

    raw = pd.read_csv(table.source).drop(columns="species")
    gap_rows = np.flatnonzero(raw.isna().any(axis=1))
    gap_columns = ", ".join(repr(c) for c in raw.columns if raw[c].isna().any())
    assert gap_columns.count(",") >= 1, "gaps in several columns"
    line = gap_rows[0] + 2  # the file's line: a header line, then the rows from 0
    assert ",," in Path(table.source).read_text().splitlines()[line - 1] + ",", "that line has the gap"
    with pytest.raises(
        DataError,
        match=re.escape(
            f"feature column(s) {gap_columns}; first at row {gap_rows[0]} (counting from 0: line {line} of the file))"
        ),
    ):
        load_dataset(table_config(Path(table.source), missing="error"), 0)


# --------------------------------------------------------------------------------------------
# The pyfunc in-process


def test_the_pyfunc_takes_float_and_int_arrays_and_dataframes(digits_model: Path, digits: Dataset) -> None:
    model = mlflow.pyfunc.load_model(str(digits_model))
    X = digits.test_rows.to_numpy(dtype=np.float64)
    out = model.predict(X)
    assert list(out.columns) == ["label"] + [f"probability_{c}" for c in digits.classes]
    assert out["label"].dtype == np.int64
    np.testing.assert_allclose(probabilities(out).sum(axis=1), 1.0, atol=1e-6)
    assert (out["label"].to_numpy() == np.asarray(digits.labels)[digits.y_test]).mean() > 0.85
    # digits' pixels are whole numbers: every int width scores as float64 does, int64 included
    same = [X.astype(np.float32), X.astype(np.int32), X.astype(np.int64), X.astype(np.uint8)]
    same += [pd.DataFrame(X), pd.DataFrame(X.astype(np.int64)), digits.test_rows, X.tolist()]
    for rows in same:
        again = model.predict(rows)
        assert again["label"].tolist() == out["label"].tolist(), type(rows)
        np.testing.assert_allclose(probabilities(again), probabilities(out), atol=1e-6)
    alone = model.predict(X[7])  # one row as a 1-D array
    np.testing.assert_allclose(probabilities(alone), probabilities(out)[7:8], atol=1e-5)


def test_the_pyfunc_refuses_rows_of_the_wrong_width(digits_model: Path, digits: Dataset) -> None:
    from mlflow.exceptions import MlflowException

    model = mlflow.pyfunc.load_model(str(digits_model))
    X = digits.test_rows.to_numpy()
    for rows, shape in ((X[:, :63], "(359, 63)"), (pd.DataFrame(X).assign(extra=0), "(359, 65)")):
        with pytest.raises(
            MlflowException, match=re.escape(f"expected rows of 64 features, got an array of shape {shape}")
        ):
            model.predict(rows)


def test_the_pytorch_flavor_loads_the_network_alone(digits_model: Path, digits: Dataset) -> None:
    network = mlflow.pytorch.load_model(str(digits_model))
    X = np.array(
        digits.test_rows, dtype=np.float64
    )  # its input is float64: the scaling runs in the rows' precision
    with torch.no_grad():
        logits = network(torch.as_tensor(X))
    served = mlflow.pyfunc.load_model(str(digits_model)).predict(X)
    np.testing.assert_allclose(torch.softmax(logits, dim=1).numpy(), probabilities(served), atol=1e-5)


def test_the_table_pyfunc_scores_raw_rows_with_strings_gaps_and_unseen_categories(
    table_model: Path, table: Dataset
) -> None:
    model = mlflow.pyfunc.load_model(str(table_model))
    rows = table.test_rows
    out = model.predict(rows)
    assert set(out["label"]) <= set(table.classes) and out["label"].dtype == object
    assert (out["label"].to_numpy() == np.asarray(table.labels)[table.y_test]).mean() > 0.8
    assert rows.isna().any(axis=None), "the test rows hold gaps"
    odd = rows.iloc[:3].copy()
    odd["island"] = ["Atlantis", None, "Dream"]
    odd["body_mass_g"] = odd["body_mass_g"].fillna(4000).astype(np.int32)  # an int column
    scored = model.predict(odd)
    assert len(scored) == 3 and np.isfinite(probabilities(scored)).all()
    without_sex = model.predict(rows.drop(columns="sex"))  # an optional (categorical) column left out
    assert len(without_sex) == len(rows)
    with_target = model.predict(rows.assign(species="setosa"))  # the table as read: its target is let through
    assert with_target["label"].tolist() == out["label"].tolist()


def test_the_table_pyfunc_takes_int64_category_and_all_empty_columns(
    table_model: Path, table: Dataset
) -> None:
    model = mlflow.pyfunc.load_model(str(table_model))
    rows = table.test_rows.copy()
    rows["body_mass_g"] = rows["body_mass_g"].fillna(4000.0)
    expected = model.predict(rows)
    as_int = rows.astype({"body_mass_g": np.int64})
    read = pd.read_csv(io.StringIO(as_int.to_csv(index=False)))  # whole numbers without gaps: int64
    assert read["body_mass_g"].dtype == np.int64
    categories = rows.astype({"island": "category", "sex": "category"})
    for variant in (read, as_int, categories, rows.astype({"body_mass_g": "Int64"})):
        got = model.predict(variant)
        assert got["label"].tolist() == expected["label"].tolist()
        np.testing.assert_allclose(probabilities(got), probabilities(expected), atol=1e-6)
    # an island column left empty reads back as float NaN: scored as if it were left out
    empty = pd.read_csv(io.StringIO(rows.assign(island=None).to_csv(index=False)))
    assert empty["island"].dtype == np.float64
    np.testing.assert_allclose(
        probabilities(model.predict(empty)),
        probabilities(model.predict(rows.drop(columns="island"))),
        atol=1e-6,
    )


def test_the_table_pyfunc_refuses_missing_unknown_and_non_numeric_columns(
    table_model: Path, table: Dataset
) -> None:
    from mlflow.exceptions import MlflowException

    model = mlflow.pyfunc.load_model(str(table_model))
    rows = table.test_rows.iloc[:4]
    takes = (
        r"the model takes \['bill_length_mm', 'bill_depth_mm', 'flipper_length_mm', 'body_mass_g'\], "
        r"and optionally \['island', 'sex'\]"
    )
    with pytest.raises(MlflowException, match=rf"missing column\(s\) \['bill_depth_mm'\]: {takes}"):
        model.predict(rows.drop(columns="bill_depth_mm"))
    with pytest.raises(MlflowException, match=rf"unknown column\(s\) \['Island'\]: {takes}"):
        model.predict(rows.rename(columns={"island": "Island"}))  # a misspelt optional column is no gap
    bad = rows.astype({"bill_depth_mm": object})
    bad.loc[bad.index[1], "bill_depth_mm"] = "deep"
    with pytest.raises(
        MlflowException, match=r"column 'bill_depth_mm' takes numbers, but row 1 holds 'deep'"
    ):
        model.predict(bad)
    with pytest.raises(
        MlflowException, match=r"expected rows of 6 features \(bill_length_mm, .*, sex, in this order\)"
    ):
        model.predict(rows.to_numpy()[:, :5])
    positional = model.predict(rows.to_numpy())  # a 2-D array: the table's columns in order
    np.testing.assert_allclose(probabilities(positional), probabilities(model.predict(rows)), atol=1e-6)


FINITE = r"takes finite numbers within float32's range \(±3\.403e\+38\), but row"


def test_the_pyfunc_refuses_infinite_and_float32_overflowing_numbers(
    digits_model: Path, digits: Dataset, table_model: Path, table: Dataset
) -> None:
    from mlflow.exceptions import MlflowException

    # array data: by position (and name); as training refuses them, whatever the dtype
    model = mlflow.pyfunc.load_model(str(digits_model))
    X = digits.test_rows.to_numpy(dtype=np.float64)[:3]
    with pytest.raises(MlflowException, match=rf"feature 0 \('pixel_0_0'\) {FINITE} 0 holds inf \(1 such"):
        model.predict(np.full((1, 64), np.inf))
    minus = X.astype(np.float32)
    minus[1, 5] = -np.inf
    with pytest.raises(MlflowException, match=rf"feature 5 \('pixel_0_5'\) {FINITE} 1 holds -inf \(1 such"):
        model.predict(minus)
    with pytest.raises(
        MlflowException, match=rf"feature 0 \('pixel_0_0'\) {FINITE} 0 holds 1e\+308 \(2 such"
    ):
        model.predict(np.full((2, 64), 1e308))  # finite in float64, infinite as the network's float32
    # a table: by column name; "Infinity" is how JSON (dataframe_split) spells it
    model = mlflow.pyfunc.load_model(str(table_model))
    rows = table.test_rows.iloc[:4]
    spelt = rows.astype({"bill_length_mm": object})
    spelt.loc[spelt.index[0], "bill_length_mm"] = "Infinity"
    with pytest.raises(MlflowException, match=rf"column 'bill_length_mm' {FINITE} 0 holds 'Infinity'"):
        model.predict(spelt)
    numeric = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
    huge = rows.astype({c: np.float64 for c in numeric}).assign(**{c: 1e308 for c in numeric})
    with pytest.raises(MlflowException, match=rf"column 'bill_length_mm' {FINITE} 0 holds 1e\+308 \(4 such"):
        model.predict(huge)
    # float32 holds 3e38, but not once standardised (std < 1): the output is not finite, refused too
    large = rows.astype({"bill_depth_mm": np.float64})
    large.loc[large.index[1], "bill_depth_mm"] = 3e38
    with pytest.raises(
        MlflowException,
        match=r"row 1 overflows the network in float32 \(its output is not finite\): "
        r"column 'bill_depth_mm' holds 3e\+38, .* training standard deviations from its mean \(1 such",
    ):
        model.predict(large)
    # gaps are not refused: they still take the train split's fill values
    gaps = model.predict(pd.DataFrame({c: [None, np.nan] for c in numeric}))
    assert len(gaps) == 2 and np.isfinite(probabilities(gaps)).all()


def test_the_pyfunc_refuses_booleans_in_numeric_columns(
    digits_model: Path, digits: Dataset, table_model: Path, table: Dataset
) -> None:
    from mlflow.exceptions import MlflowException

    model = mlflow.pyfunc.load_model(str(digits_model))
    X = digits.test_rows.to_numpy(dtype=np.float64)[:3]
    first = bool(X[0, 0])
    with pytest.raises(
        MlflowException, match=rf"feature 0 \('pixel_0_0'\) takes numbers, but row 0 holds {first} \(3 such"
    ):
        model.predict(X.astype(bool))
    listed = X.tolist()
    listed[1][5] = True  # numpy alone would read it as 1.0
    with pytest.raises(
        MlflowException, match=r"feature 5 \('pixel_0_5'\) takes numbers, but row 1 holds True"
    ):
        model.predict(listed)
    model = mlflow.pyfunc.load_model(str(table_model))
    rows = table.test_rows.iloc[:4]
    with pytest.raises(
        MlflowException, match=r"column 'bill_depth_mm' takes numbers, but row 0 holds True \(4 such"
    ):
        model.predict(rows.assign(bill_depth_mm=True))
    mixed = rows.astype({"body_mass_g": object})  # a JSON `false` among numbers (dataframe_split)
    mixed.loc[mixed.index[2], "body_mass_g"] = False
    with pytest.raises(
        MlflowException, match=r"column 'body_mass_g' takes numbers, but row 2 holds False \(1 such"
    ):
        model.predict(mixed)
    nullable = rows.assign(flipper_length_mm=pd.array([None, True, False, None], dtype="boolean"))
    with pytest.raises(
        MlflowException, match=r"column 'flipper_length_mm' takes numbers, but row 1 holds True \(2 such"
    ):
        model.predict(nullable)
    # a categorical column takes booleans as categories, as before
    assert len(model.predict(rows.assign(sex=True))) == 4


def test_the_pyfunc_refuses_a_scalar_naming_the_rows_it_expects(
    digits_model: Path, table_model: Path
) -> None:
    from mlflow.exceptions import MlflowException

    model = mlflow.pyfunc.load_model(str(digits_model))
    for scalar, shown in ((5, "5"), (np.array(5), "5"), (np.float32(2.5), "2.5"), (None, "None")):
        with pytest.raises(MlflowException, match=rf"expected rows of 64 features, got a scalar: {shown}$"):
            model.predict(scalar)  # `{"inputs": 5}` reaches the model as a 0-d array
    model = mlflow.pyfunc.load_model(str(table_model))
    with pytest.raises(
        MlflowException,
        match=r"expected rows of 6 features \(bill_length_mm, .*, sex, in this order\), got a scalar: 'abc'$",
    ):
        model.predict(np.array("abc"))


def test_the_signature_declares_the_outputs_and_the_example_shows_the_inputs(
    table_model: Path, table: Dataset
) -> None:
    meta = mlflow.models.Model.load(str(table_model / "MLmodel"))
    # no input schema: the model checks its inputs itself (MLflow's would refuse int64 in-process)
    assert meta.signature.inputs is None
    assert meta.signature.outputs.input_names() == ["label"] + [f"probability_{c}" for c in table.classes]
    example = json.loads((table_model / "serving_input_example.json").read_text())["dataframe_split"]
    assert example["columns"] == table.preparation.input_columns
    spec = json.loads((table_model / "artifacts" / "preparation.json").read_text())
    assert spec == json.loads(json.dumps(table.preparation.spec))
    assert spec["target"]["column"] == "species"


def test_a_regression_pyfunc_returns_values_in_the_target_units(diabetes: Dataset, tmp_path: Path) -> None:
    model = mlflow.pyfunc.load_model(str(save_model(diabetes, tmp_path / "best_model")))
    out = model.predict(diabetes.test_rows.to_numpy())
    assert list(out.columns) == ["value"]
    rmse = float(np.sqrt(np.mean((out["value"].to_numpy() - diabetes.raw_targets(diabetes.y_test)) ** 2)))
    assert rmse < 0.8 * float(np.std(diabetes.raw_targets(diabetes.y_test)))


# --------------------------------------------------------------------------------------------
# The scoring server


def serve(model_uri: str, home: Path, **env: str) -> tuple[str, subprocess.Popen[bytes]]:
    """`mlflow models serve --env-manager local` on a free port; returns its URL and process."""
    port = free_port()
    log = home / f"serve-{port}.log"
    command = [str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local"]
    command += ["-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    # The server execs `uvicorn` by name: the environment's bin folder goes first on PATH.
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    proc = subprocess.Popen(
        command,
        env=base_env(PATH=path, **env),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=home,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", proc, 180, log)
    except BaseException:
        stop(proc)
        raise
    return f"http://127.0.0.1:{port}", proc


@pytest.fixture(scope="module")
def digits_server(digits_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url, proc = serve(str(digits_model), tmp_path_factory.mktemp("serve-digits"))
    yield url
    stop(proc)


@pytest.fixture(scope="module")
def table_server(table_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url, proc = serve(str(table_model), tmp_path_factory.mktemp("serve-table"))
    yield url
    stop(proc)


def post(url: str, body: bytes, content_type: str) -> tuple[int, str]:
    """POST to `/invocations`: the status and the body, 4xx and 5xx included."""
    request = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def invoke(url: str, body: bytes, content_type: str) -> pd.DataFrame:
    status, text = post(url, body, content_type)
    assert status == 200, f"HTTP {status}: {text[:2000]}"
    return pd.DataFrame(json.loads(text)["predictions"])


def requests(rows: pd.DataFrame, positional: bool) -> dict[str, tuple[bytes, str]]:
    """One request per format the scoring server reads: CSV, `dataframe_split`, `inputs`."""
    split = json.loads(rows.to_json(orient="split", index=False))
    inputs = (
        rows.to_numpy().tolist()
        if positional
        else {c: json.loads(rows[c].to_json(orient="values")) for c in rows}
    )
    return {
        "csv": (rows.to_csv(index=False).encode(), "text/csv"),
        "dataframe_split": (json.dumps({"dataframe_split": split}).encode(), "application/json"),
        "inputs": (json.dumps({"inputs": inputs}).encode(), "application/json"),
    }


def assert_same_answers(got: pd.DataFrame, expected: pd.DataFrame, what: str) -> None:
    assert got["label"].tolist() == expected["label"].tolist(), what
    np.testing.assert_allclose(probabilities(got), probabilities(expected), atol=1e-6, err_msg=what)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["array", "table"])
def test_the_scoring_server_answers_csv_dataframe_split_and_inputs_like_the_pyfunc(
    layout: str, request: pytest.FixtureRequest
) -> None:
    data: Dataset = request.getfixturevalue("digits" if layout == "array" else "table")
    folder: Path = request.getfixturevalue("digits_model" if layout == "array" else "table_model")
    url: str = request.getfixturevalue("digits_server" if layout == "array" else "table_server")
    model = mlflow.pyfunc.load_model(str(folder))
    rows = data.test_rows.iloc[:20].copy()
    if layout == "table":
        rows.loc[rows.index[0], "island"] = "Atlantis"
        whole = rows.assign(body_mass_g=rows["body_mass_g"].fillna(4000.0))
        variants = {"float64": rows, "float64 whole": whole, "int64": whole.astype({"body_mass_g": np.int64})}
        twins = {"int64": "float64 whole"}  # an int column, as pandas reads one without gaps
    else:
        variants = {"float64": rows, "int64": rows.astype(np.int64)}  # digits' pixels are whole numbers
        twins = {"int64": "float64"}
    expected = {dtype: model.predict(variant) for dtype, variant in variants.items()}  # in-process
    for int_rows, float_rows in twins.items():
        assert_same_answers(expected[int_rows], expected[float_rows], "int64 in-process")
    for dtype, variant in variants.items():
        for fmt, (body, content_type) in requests(variant, positional=layout == "array").items():
            assert_same_answers(invoke(url, body, content_type), expected[dtype], f"{dtype} {fmt}")


@pytest.mark.slow
def test_the_scoring_server_reads_category_parquet_and_an_empty_string_column_in_csv(
    table_model: Path, table_server: str, table: Dataset
) -> None:
    model = mlflow.pyfunc.load_model(str(table_model))
    rows = table.test_rows.iloc[:20].copy()
    rows.loc[rows.index[0], "island"] = "Atlantis"  # a category of the column, unseen in training
    categories = rows.astype({"island": "category", "sex": "category"})
    buffer = io.BytesIO()
    categories.to_parquet(buffer)
    assert isinstance(pd.read_parquet(io.BytesIO(buffer.getvalue()))["island"].dtype, pd.CategoricalDtype)
    got = invoke(table_server, buffer.getvalue(), "application/vnd.apache.parquet")
    assert_same_answers(got, model.predict(rows), "parquet with category columns")
    assert_same_answers(got, model.predict(categories), "category columns in-process")

    no_island = rows.assign(island=None)  # every island cell empty in the CSV
    body = no_island.to_csv(index=False).encode()
    assert pd.read_csv(io.BytesIO(body))["island"].dtype == np.float64  # pandas reads it as numbers
    expected = model.predict(rows.drop(columns="island"))
    assert_same_answers(invoke(table_server, body, "text/csv"), expected, "CSV, island all empty")
    assert_same_answers(model.predict(pd.read_csv(io.BytesIO(body))), expected, "the same CSV in-process")


@pytest.mark.slow
def test_the_scoring_server_refuses_bad_rows_with_the_models_message(
    digits_server: str, table_server: str, table: Dataset
) -> None:
    rows = table.test_rows.iloc[:3].astype({"bill_depth_mm": object})
    rows.loc[rows.index[1], "bill_depth_mm"] = "deep"
    bad_tables = {
        "column 'bill_depth_mm' takes numbers, but row 1 holds 'deep'": rows,
        "unknown column(s) ['Island']": table.test_rows.iloc[:3].rename(columns={"island": "Island"}),
        "missing column(s) ['body_mass_g']": table.test_rows.iloc[:3].drop(columns="body_mass_g"),
    }
    for message, bad in bad_tables.items():
        for fmt, (body, content_type) in requests(bad, positional=False).items():
            status, text = post(table_server, body, content_type)
            assert status == 400 and message in json.loads(text)["message"], (fmt, status, text[:2000])
    narrow = json.dumps({"inputs": [[0.0] * 63]}).encode()
    status, text = post(digits_server, narrow, "application/json")
    assert status == 400 and "expected rows of 64 features, got an array of shape (1, 63)" in text, text[
        :2000
    ]


@pytest.mark.slow
def test_the_scoring_server_refuses_scalars_infinite_numbers_and_booleans_with_400(
    digits_server: str, table_server: str
) -> None:
    columns = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "island"]

    def split(*row: Any) -> dict[str, Any]:
        return {"dataframe_split": {"columns": columns, "data": [list(row)]}}

    finite = "takes finite numbers within float32's range (±3.403e+38), but row 0 holds"
    cases = [
        (digits_server, {"inputs": 5}, "expected rows of 64 features, got a scalar: 5"),
        (table_server, {"inputs": "abc"}, "expected rows of 6 features (bill_length_mm, "),
        (digits_server, {"inputs": [[float("inf")] * 64]}, f"feature 0 ('pixel_0_0') {finite} inf"),
        (
            table_server,
            split("Infinity", 3.5, 1.4, 0.2, "Dream"),
            f"column 'bill_length_mm' {finite} 'Infinity'",
        ),
        (
            table_server,
            split(1e308, 1e308, 1e308, 1e308, "Dream"),
            f"column 'bill_length_mm' {finite} 1e+308",
        ),
        (
            table_server,
            split(True, 3.5, 1.4, 0.2, "Dream"),
            "column 'bill_length_mm' takes numbers, but row 0 holds True",
        ),
    ]
    for url, body, message in cases:
        status, text = post(url, json.dumps(body).encode(), "application/json")  # Infinity: Python's JSON
        assert status == 400 and message in json.loads(text)["message"], (body, status, text[:2000])


def test_validate_prints_the_prepared_feature_count(table: Dataset, tmp_path: Path) -> None:
    from conftest import small_config

    from hyperflow.components.describe import describe_config

    cfg = small_config(tmp_path, data={"source": "file", "path": table.source, "target": "species"})
    text = describe_config(cfg, table)
    assert "9 features, 3 outputs" in text
    assert (
        f"prepared: 6 columns -> 9 features; one-hot island (3), sex (2); {table.preparation.spec['n_imputed']} gaps filled"
        in text
    )


# --------------------------------------------------------------------------------------------
# The real flow on a table


@pytest.fixture(scope="module")
def table_study(prefect_server, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A real search on the penguins-like CSV: two trials, a string target, gaps, two string columns."""
    from conftest import small_config
    from mlflow.tracking import MlflowClient

    from hyperflow.flows.search_flow import run_search

    tmp = tmp_path_factory.mktemp("table-study")
    csv = penguins_like(tmp / "penguins.csv", seed=1)
    cfg = small_config(
        tmp,
        data={"source": "file", "path": str(csv), "target": "species"},
        model={"hidden_layers": [16], "max_epochs": 25, "optimizer": "adam", "batch_size": 32},
        search={"n_trials": 2, "space": {"learning_rate": {"low": 0.01, "high": 0.05, "log": True}}},
    )
    result = run_search(cfg)
    return cfg, result, MlflowClient(result.tracking_uri, registry_uri=result.tracking_uri)


@pytest.mark.slow
def test_a_table_with_strings_gaps_and_a_string_target_trains_and_its_champion_scores_raw_rows(
    table_study,  # type: ignore[no-untyped-def]
) -> None:
    import mlflow

    from hyperflow.components.model import expected_param_count

    cfg, result, client = table_study
    assert result.status == "FINISHED" and result.promoted and result.test_metrics["test_accuracy"] > 0.8
    spec = client.download_artifacts(result.study_run_id, "data/preparation.json")
    logged = json.loads(Path(spec).read_text())
    assert [c["name"] for c in logged["columns"] if c["kind"] == "categorical"] == ["island", "sex"]
    assert logged["n_imputed"] > 0 and len(logged["features"]) == 9
    trials = client.search_runs(
        [client.get_run(result.study_run_id).info.experiment_id],
        f"tags.`mlflow.parentRunId` = '{result.study_run_id}'",
    )
    assert {r.data.metrics["param_count"] for r in trials} == {expected_param_count(9, [16], 3)}

    mlflow.set_tracking_uri(result.tracking_uri)
    mlflow.set_registry_uri(result.tracking_uri)
    champion = mlflow.pyfunc.load_model(f"models:/{cfg.name}@champion")
    data = load_dataset(cfg.data, cfg.seed)
    out = champion.predict(data.test_rows)
    assert (out["label"].to_numpy() == np.asarray(data.labels)[data.y_test]).mean() == pytest.approx(
        result.test_metrics["test_accuracy"], abs=1e-6
    )
    raw = pd.DataFrame(
        {
            "bill_length_mm": [5.1, None, 6.7],
            "bill_depth_mm": [3.5, 3.0, None],
            "flipper_length_mm": [1.4, 4.5, 5.8],
            "body_mass_g": [200, 1500, None],
            "island": ["Torgersen", "Atlantis", None],  # an unseen island, an empty cell
            "sex": ["female", None, "male"],
        }
    )
    scored = champion.predict(raw)
    assert scored["label"].tolist()[0] == "setosa" and set(scored["label"]) <= {
        "setosa",
        "versicolor",
        "virginica",
    }
    np.testing.assert_allclose(probabilities(scored).sum(axis=1), 1.0, atol=1e-6)
    # the raw rows as a CSV reader gives them back: an int64 column, empty cells as NaN
    as_read = pd.read_csv(
        io.StringIO(raw.fillna({"body_mass_g": 1500}).astype({"body_mass_g": "int64"}).to_csv(index=False))
    )
    assert as_read["body_mass_g"].dtype == np.int64
    again = champion.predict(as_read)
    np.testing.assert_allclose(probabilities(again)[:2], probabilities(scored)[:2], atol=1e-6)


def test_a_numeric_column_trained_on_booleans_takes_booleans(tmp_path: Path) -> None:
    from mlflow.exceptions import MlflowException

    frame = pd.read_csv(penguins_like(tmp_path / "penguins.csv"))
    frame["tagged"] = np.random.default_rng(0).random(len(frame)) < 0.5
    frame.to_csv(tmp_path / "penguins.csv", index=False)
    data = load_dataset(table_config(tmp_path / "penguins.csv", categorical=["island", "sex"]), 0)
    assert data.test_rows["tagged"].dtype == bool  # left out of data.categorical: a numeric column
    model = mlflow.pyfunc.load_model(str(save_model(data, tmp_path / "best_model")))
    out = model.predict(data.test_rows)  # its own rows, booleans included
    np.testing.assert_allclose(
        probabilities(out), probabilities(model.predict(data.test_rows.astype({"tagged": float}))), atol=1e-6
    )
    with pytest.raises(MlflowException, match=r"column 'bill_depth_mm' takes numbers, but row 0 holds True"):
        model.predict(data.test_rows.assign(bill_depth_mm=True))  # still refused where numbers were trained
    # A list of rows (JSON `inputs`) keeps each cell's type: a boolean among strings stays a boolean,
    # and its text ('True', as MLflow's scoring server parses such a row) is read as one too.
    rows = data.test_rows.iloc[:3]
    listed = model.predict(rows.astype(object).where(rows.notna(), None).values.tolist())
    np.testing.assert_allclose(probabilities(listed), probabilities(out.iloc[:3]), atol=1e-6)
    as_text = model.predict(rows.astype({"tagged": str}))
    np.testing.assert_allclose(probabilities(as_text), probabilities(out.iloc[:3]), atol=1e-6)


def test_a_column_far_from_zero_is_served_as_it_was_tested(tmp_path: Path) -> None:
    """Epoch seconds near 1.6e9 step by 128 in float32: the served model scales them in float64,
    so it gives what the tested network gives on the prepared test split."""
    rng = np.random.default_rng(0)
    ts = 1.6e9 + rng.uniform(0, 60, 300)
    frame = pd.DataFrame(
        {"ts": ts, "noise": rng.normal(size=300), "y": np.where(ts > 1.6e9 + 30, "late", "early")}
    )
    frame.to_csv(tmp_path / "ts.csv", index=False)
    data = load_dataset(DataConfig(source="file", path=str(tmp_path / "ts.csv"), target="y"), 0)
    net = fit_network(data, epochs=200)
    with torch.no_grad():
        tested = torch.softmax(net(torch.as_tensor(data.X_test)), dim=1).numpy()
    save_served_model(scoring_model(net, data), raw_example(data), path=tmp_path / "m", **served_inputs(data))
    served = mlflow.pyfunc.load_model(str(tmp_path / "m")).predict(data.test_rows)
    np.testing.assert_allclose(probabilities(served), tested, atol=1e-5)
    assert (served["label"].to_numpy() == np.asarray(data.labels)[data.y_test]).mean() > 0.9


def test_the_champion_of_a_one_row_test_split_takes_any_number_of_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"a": rng.normal(size=120), "b": rng.normal(size=120), "y": rng.choice(["c", "d"], 120)}
    )
    frame.to_csv(tmp_path / "t.csv", index=False)
    data = load_dataset(
        DataConfig(source="file", path=str(tmp_path / "t.csv"), target="y", test_fraction=0.01), 0
    )
    assert len(data.test_rows) == 1
    model = mlflow.pyfunc.load_model(str(save_model(data, tmp_path / "best_model")))
    rows = frame.drop(columns="y")
    assert len(model.predict(rows.head(7))) == 7  # the export traced a batch of two, not of one
    assert len(model.predict(rows.head(1))) == 1


def test_zero_rows_duplicate_columns_and_dates_in_numeric_columns(table_model: Path, table: Dataset) -> None:
    from mlflow.exceptions import MlflowException

    model = mlflow.pyfunc.load_model(str(table_model))
    empty = model.predict(table.test_rows.head(0))
    assert len(empty) == 0 and list(empty.columns) == ["label", *(f"probability_{c}" for c in table.classes)]
    rows = table.test_rows.head(2)
    with pytest.raises(
        MlflowException, match=r"duplicate column\(s\) \['bill_length_mm'\]: give each column once"
    ):
        model.predict(pd.concat([rows, rows[["bill_length_mm"]]], axis=1))
    dated = rows.assign(flipper_length_mm=pd.to_datetime(["2026-01-01", "2026-01-02"]))
    with pytest.raises(
        MlflowException, match=r"column 'flipper_length_mm' takes numbers, but row 0 holds Timestamp"
    ):
        model.predict(dated)  # not read as nanoseconds since 1970
    with pytest.raises(
        MlflowException, match=r"column 'flipper_length_mm' takes numbers, but row 0 holds datetime"
    ):
        model.predict(rows.assign(flipper_length_mm=[datetime.date(2026, 1, 1), None]))


def test_a_one_hot_name_that_a_column_already_has_is_named_by_column_and_category(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"a": rng.choice(["x", "y"], 120), "a_x": rng.normal(size=120), "y": rng.choice(["c", "d"], 120)}
    )
    frame.to_csv(tmp_path / "t.csv", index=False)
    data = load_dataset(DataConfig(source="file", path=str(tmp_path / "t.csv"), target="y"), 0)
    assert data.feature_names == ["a_x", "a=x", "a_y"]
    assert len(data.feature_names) == data.n_features, "one name for each of the network's inputs"
