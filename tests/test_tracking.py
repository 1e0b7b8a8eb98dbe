"""TrialLogger's retry path on a real store: failed writes are retried, never dropped, and give up clearly."""

from __future__ import annotations

from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from hyperflow.components.names import TAG_ERROR, TAG_STATE
from hyperflow.components.tracking import StudyTracker, TrackingError, TrialLogger
from hyperflow.components.trial import TrialResult


class Flaky:
    """A real client method that fails its first `failures` calls (a server restarting)."""

    def __init__(self, method: Any, failures: int) -> None:
        self.method = method
        self.failures = failures
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"injected fault {self.calls}")
        return self.method(*args, **kwargs)


def trial_run(uri: str, name: str) -> str:
    tracker = StudyTracker(uri)
    exp = tracker.experiment_id(name)
    study = tracker.client.create_run(exp).info.run_id
    return tracker.start_trial(exp, study, number=0, params={"learning_rate": 0.1}, seed=1)


def logger_with(uri: str, run_id: str, method: str, failures: int) -> tuple[TrialLogger, Flaky]:
    logger = TrialLogger(uri, run_id, flush_seconds=0.0, retries=3, retry_delay=0.0)
    flaky = Flaky(getattr(logger.client, method), failures)
    setattr(logger.client, method, flaky)
    return logger, flaky


def finished(state: str = "completed", **extra: Any) -> TrialResult:
    return TrialResult(
        params={"learning_rate": 0.1}, seed=1, state=state, value=0.5, epochs_trained=2, **extra
    )  # type: ignore[arg-type]


def test_final_writes_are_retried_until_they_succeed(sqlite_store: str) -> None:
    run_id = trial_run(sqlite_store, "retry-succeeds")
    logger, flaky = logger_with(sqlite_store, run_id, "log_batch", failures=2)
    logger.on_epoch(0, {"val_accuracy": 0.4})
    logger.on_epoch(1, {"val_accuracy": 0.5})
    logger.finish(finished(), "val_accuracy")
    run = MlflowClient(sqlite_store).get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags[TAG_STATE] == "completed"
    history = MlflowClient(sqlite_store).get_metric_history(run_id, "val_accuracy")
    assert sorted((m.step, m.value) for m in history) == [(0, 0.4), (1, 0.5)], "nothing queued was dropped"
    assert run.data.metrics["epochs_trained"] == 2
    assert flaky.calls >= 3


def test_the_end_of_the_run_is_retried_too(sqlite_store: str) -> None:
    run_id = trial_run(sqlite_store, "retry-end")
    logger, flaky = logger_with(sqlite_store, run_id, "set_terminated", failures=2)
    logger.finish(finished("failed", error="nan"), "val_accuracy")
    run = MlflowClient(sqlite_store).get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags[TAG_ERROR] == "nan" and flaky.calls == 3


def test_a_store_that_stays_down_fails_clearly_after_the_retries_and_keeps_the_metrics(
    sqlite_store: str,
) -> None:
    run_id = trial_run(sqlite_store, "retry-gives-up")
    logger, flaky = logger_with(sqlite_store, run_id, "log_batch", failures=10)
    logger.on_epoch(0, {"val_accuracy": 0.4})
    with pytest.raises(TrackingError, match=r"could not write metrics and tags of run .* after 3 attempts"):
        logger.finish(finished(), "val_accuracy")
    assert flaky.calls == 3
    assert {m.key for m in logger._pending} >= {"val_accuracy", "param_count"}, "still queued, not dropped"
    assert MlflowClient(sqlite_store).get_run(run_id).info.status == "RUNNING", "left for resume to mark"


def test_an_epoch_write_that_fails_stays_queued_and_is_written_later(sqlite_store: str) -> None:
    run_id = trial_run(sqlite_store, "retry-epochs")
    logger, flaky = logger_with(sqlite_store, run_id, "log_batch", failures=1)
    logger.on_epoch(0, {"val_accuracy": 0.4})
    logger.on_epoch(1, {"val_accuracy": 0.45})  # flush_seconds=0: writes now, and fails
    assert flaky.calls == 1 and [m.step for m in logger._pending] == [0, 1]
    logger.finish(finished(), "val_accuracy")
    history = MlflowClient(sqlite_store).get_metric_history(run_id, "val_accuracy")
    assert sorted(m.step for m in history) == [0, 1]
