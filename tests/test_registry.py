"""The registry: when the `champion` alias moves (if_better / always, ties, no champion), on a real store."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from hyperflow.components.names import CHAMPION, TAG_TEST_METRIC, TAG_TEST_VALUE
from hyperflow.components.registry import Registration, register_best_model


class Client(MlflowClient):
    """A client of the session's store whose registered model is this test's own."""

    model: str


@pytest.fixture
def client(sqlite_store: str, request: pytest.FixtureRequest) -> Client:
    client = Client(tracking_uri=sqlite_store, registry_uri=sqlite_store)
    client.model = f"promoted-{request.node.name}"
    return client


def register(client: Client, value: float, *, mode: str = "max", promote: str = "if_better") -> Registration:
    """A study run with a logged `best_model` folder, registered with test value `value`."""
    exp = client.get_experiment_by_name("promotion")
    exp_id = exp.experiment_id if exp else client.create_experiment("promotion")
    run = client.create_run(exp_id)
    client.log_text(run.info.run_id, "a model", "best_model/MLmodel")
    return register_best_model(
        client,
        name=client.model,
        model_uri=f"runs:/{run.info.run_id}/best_model",
        run_id=run.info.run_id,
        test_metric="test_accuracy",
        test_value=value,
        mode=mode,
        promote=promote,
    )


def champion(client: Client) -> str:
    return str(client.get_model_version_by_alias(client.model, CHAMPION).version)


def test_the_first_version_becomes_champion_and_a_better_one_takes_over(client: Client) -> None:
    first = register(client, 0.90)
    assert first.promoted and first.previous_champion is None and first.reason == "no champion yet"
    assert first.champion_uri == f"models:/{client.model}@champion" and champion(client) == first.version
    version = client.get_model_version(client.model, first.version)
    assert version.tags[TAG_TEST_METRIC] == "test_accuracy" and float(version.tags[TAG_TEST_VALUE]) == 0.90
    better = register(client, 0.95)
    assert better.promoted and better.previous_champion == first.version
    assert "beats the champion's 0.9" in better.reason and champion(client) == better.version


@pytest.mark.parametrize(("mode", "worse"), [("max", 0.80), ("min", 0.99)])
def test_if_better_keeps_the_champion_against_a_worse_or_equal_version(
    client: Client, mode: str, worse: float
) -> None:
    first = register(client, 0.90, mode=mode)
    for value in (worse, 0.90):  # an equal value does not beat the champion either
        reg = register(client, value, mode=mode)
        assert not reg.promoted and "does not beat" in reg.reason
        assert champion(client) == first.version


def test_min_mode_promotes_a_lower_value(client: Client) -> None:
    register(client, 0.5, mode="min")
    lower = register(client, 0.4, mode="min")
    assert lower.promoted and champion(client) == lower.version


def test_always_moves_the_alias_even_to_a_worse_version(client: Client) -> None:
    register(client, 0.95)
    worse = register(client, 0.50, promote="always")
    assert worse.promoted and worse.reason == "tracking.promote is 'always'"
    assert champion(client) == worse.version


def test_a_champion_that_records_no_value_of_this_metric_is_replaced(client: Client) -> None:
    first = register(client, 0.99)
    client.delete_model_version_tag(client.model, first.version, TAG_TEST_VALUE)
    second = register(client, 0.10)
    assert second.promoted and "records no test_accuracy" in second.reason
    assert champion(client) == second.version


def test_a_deleted_champion_alias_counts_as_no_champion(client: Client) -> None:
    register(client, 0.99)
    client.delete_registered_model_alias(client.model, CHAMPION)
    second = register(client, 0.10)
    assert second.promoted and second.reason == "no champion yet" and champion(client) == second.version
