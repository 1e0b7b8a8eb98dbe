"""Trials on GPUs, on a CPU: placement on simulated GPUs, slot workers' environments, CUDA errors, bad input."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import small_config
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from hyperflow.components import faults
from hyperflow.components.config import ConfigError, validate_config
from hyperflow.components.devices import (
    CUDA_ENV,
    Slot,
    SlotBook,
    device_problems,
    gpu_slots,
    is_device_error,
    place,
    trial_slots,
)
from hyperflow.components.names import FAILED
from hyperflow.components.study import TrialError
from hyperflow.components.training import train_trial
from hyperflow.components.trial import TrialResult, TrialSpec
from hyperflow.flows.cli import app

NO_GPU = pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks what happens on a machine without a GPU"
)


# ------------------------------------------------------------------------------------ placement


def test_slots_of_fractions_and_whole_gpus() -> None:
    halves = gpu_slots(0.5, [0, 1])
    assert [s.devices for s in halves] == [(0,), (1,), (0,), (1,)]
    thirds = gpu_slots(1 / 3, [0])
    assert [s.devices for s in thirds] == [(0,), (0,), (0,)]
    pairs = gpu_slots(2, [0, 1, 2, 3, 4])  # the fifth GPU cannot hold a trial of 2
    assert [s.devices for s in pairs] == [(0, 1), (2, 3)]
    assert Slot(0, (2, 3)).env == {CUDA_ENV: "2,3"}


def test_place_is_a_pure_function_that_spreads_trials_over_the_gpus() -> None:
    slots = gpu_slots(0.5, [0, 1])
    first = place(slots, set())
    assert first is not None and first.devices == (0,)
    second = place(slots, {first.index})
    assert second is not None and second.devices == (1,), "the second trial goes to the idle GPU"
    assert place(slots, {first.index}) == second, "same inputs, same slot"
    assert place(slots, {s.index for s in slots}) is None


@pytest.mark.parametrize("seed", range(5))
def test_eight_trials_on_two_gpus_at_half_never_put_three_on_one_and_free_their_slot(seed: int) -> None:
    """8 trials on 2 simulated GPUs at 0.5 per trial: they end (completed, failed, interrupted) in a
    random order; a trial starts whenever a slot is free."""
    rng = random.Random(seed)
    book = SlotBook(gpu_slots(0.5, [0, 1]))
    waiting = list(range(8))
    running: dict[int, Slot] = {}
    ended: dict[int, str] = {}
    peak = 0
    while waiting or running:
        while waiting:
            slot = book.take(waiting[0])
            if slot is None:
                assert len(running) == 4, "a slot was refused while one was free"
                break
            running[waiting.pop(0)] = slot
        load = book.load()
        assert max(load.values()) <= 2, f"a GPU holds more than 2 trials: {load}"
        assert sum(load.values()) == len(running)
        peak = max(peak, len(running))
        trial = rng.choice(sorted(running))
        freed = book.free(trial)
        assert freed == running.pop(trial), "a trial frees the slot it held"
        ended[trial] = rng.choice(["completed", "failed", "interrupted"])
    assert peak == 4, "both GPUs were kept full while trials waited"
    assert sorted(ended) == list(range(8))
    assert book.free_count == 4 and book.free(0) is None


# ------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("value", [0.5, 0.25, "1/3", 0.333, 1, 2, 8])
def test_gpus_per_trial_takes_one_over_k_or_a_whole_number(value: Any) -> None:
    cfg = validate_config({"runner": {"gpus_per_trial": value}})
    k = round(1 / cfg.runner.gpus_per_trial) if cfg.runner.gpus_per_trial < 1 else None
    assert k is None or k in (2, 3, 4)


@pytest.mark.parametrize(("value", "fragment"), [(0.3, "1/3"), (0.33, "1/3"), (1.5, "whole"), (0, "> 0")])
def test_a_fraction_that_is_not_one_over_k_is_refused_by_its_dotted_path(value: float, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate_config({"runner": {"gpus_per_trial": value}})
    message = str(err.value)
    assert "runner.gpus_per_trial" in message and fragment in message, message


def test_precision_is_read_from_yaml_numbers_and_names() -> None:
    assert validate_config(yaml.safe_load("runner: {precision: 32}")).runner.precision == "32"
    assert validate_config({"runner": {"precision": "bf16-mixed"}}).runner.precision == "bf16-mixed"
    with pytest.raises(ConfigError, match=r"runner\.precision"):
        validate_config({"runner": {"precision": "64"}})


def test_device_problems_name_each_key() -> None:
    def paths(**kw: Any) -> list[str]:
        args = {"accelerator": "auto", "gpus_per_trial": 1.0, "precision": "32", "n_gpus": 0, **kw}
        return [p for p, _ in device_problems(**args)]

    assert paths() == []
    assert paths(accelerator="gpu") == ["runner.accelerator"]
    assert paths(n_gpus=2, gpus_per_trial=4.0) == ["runner.gpus_per_trial"]
    assert paths(n_gpus=2, gpus_per_trial=2.0) == []
    assert paths(precision="16-mixed") == ["runner.precision"]
    assert paths(precision="16-mixed", n_gpus=1) == []
    assert paths(precision="bf16-mixed") == []
    # A remote Dask cluster's GPUs are its workers': this machine's count proves nothing.
    assert paths(accelerator="gpu", remote=True) == []


def _cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, *sets: str) -> tuple[int, str]:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "devices",
                "model": {"hidden_layers": [16], "max_epochs": 2},
                "search": {"strategy": "random", "n_trials": 2},
            }
        )
    )
    args = [command, str(config)]
    for s in sets:
        args += ["--set", s]
    result = CliRunner().invoke(app, args)
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists(), "a run was created"
    return result.exit_code, output


@NO_GPU
@pytest.mark.parametrize("command", ["run", "validate"])
@pytest.mark.parametrize(
    ("setting", "fragment"),
    [
        ("runner.accelerator=gpu", "runner.accelerator: gpu, but torch sees no GPU"),
        ("runner.precision=16-mixed", "runner.precision: 16-mixed needs a GPU"),
        ("runner.gpus_per_trial=0.4", "runner.gpus_per_trial: a fraction of a GPU must be 1/k"),
    ],
)
def test_device_bad_input_is_refused_before_any_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, setting: str, fragment: str
) -> None:
    code, output = _cli(tmp_path, monkeypatch, command, setting)
    assert code == 2, output
    assert fragment in output, output


def test_more_gpus_per_trial_than_the_machine_has_is_refused_before_any_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A machine with 2 GPUs, simulated: what torch would count there.
    monkeypatch.setattr("hyperflow.components.preflight.gpu_count", lambda: 2)
    code, output = _cli(tmp_path, monkeypatch, "run", "runner.accelerator=gpu", "runner.gpus_per_trial=4")
    assert code == 2, output
    assert "runner.gpus_per_trial: 4 GPUs per trial, but this machine has 2" in output, output


# ------------------------------------------------------------------------------------ training


def _spec(**runner: Any) -> TrialSpec:
    cfg = validate_config({"model": {"hidden_layers": [16]}, "runner": runner})
    return TrialSpec.from_config(cfg, num_threads=1)


@NO_GPU
def test_auto_on_a_cpu_machine_trains_as_cpu_does_and_uses_no_slots(digits) -> None:  # type: ignore[no-untyped-def]
    auto, cpu = _spec(), _spec(accelerator="cpu")
    assert auto.accelerator == "cpu"
    assert trial_slots(validate_config({}).runner) is None
    params = {"max_epochs": 3, "learning_rate": 0.05}
    a = train_trial(digits, params, auto, seed=3)
    b = train_trial(digits, params, cpu, seed=3)
    assert a.state == b.state == "completed"
    assert a.history == b.history
    assert a.state_dict is not None and b.state_dict is not None
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)


def test_slots_follow_the_machine_and_the_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = validate_config({"runner": {"gpus_per_trial": 0.5}}).runner
    monkeypatch.delenv(CUDA_ENV, raising=False)
    slots = trial_slots(runner, n_gpus=2)
    assert slots is not None and [s.env[CUDA_ENV] for s in slots] == ["0", "1", "0", "1"]
    # This process was started on GPUs 2 and 3: its workers must be given those, not 0 and 1.
    monkeypatch.setenv(CUDA_ENV, "2,3")
    slots = trial_slots(runner, n_gpus=2)
    assert slots is not None and [s.env[CUDA_ENV] for s in slots] == ["2", "3", "2", "3"]
    cpu = validate_config({"runner": {"accelerator": "cpu"}}).runner
    assert trial_slots(cpu, n_gpus=2) is None


def test_bf16_mixed_trains_the_built_in_model_on_the_cpu(digits) -> None:  # type: ignore[no-untyped-def]
    result = train_trial(
        digits, {"max_epochs": 3, "learning_rate": 0.05}, _spec(precision="bf16-mixed"), seed=1
    )
    assert result.state == "completed", result.error
    assert result.value is not None and result.value > 0.5
    assert result.state_dict is not None
    assert all(t.device.type == "cpu" and t.dtype == torch.float32 for t in result.state_dict.values())


@pytest.mark.parametrize(
    ("point", "fragment"),
    [
        ("cuda-oom", "OutOfMemoryError: CUDA out of memory"),
        ("cuda-error", "CUDA error: an illegal memory access"),
    ],
)
def test_a_cuda_error_fails_the_trial_with_that_reason(
    digits, monkeypatch: pytest.MonkeyPatch, point: str, fragment: str
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(faults.FAULT_ENV, point)
    monkeypatch.setattr(faults, "_seen", {})
    result = train_trial(digits, {"max_epochs": 2}, _spec(), seed=0)
    assert result.state == FAILED
    assert result.error is not None and fragment in result.error
    assert result.device_error
    again = train_trial(digits, {"max_epochs": 2}, _spec(), seed=0)  # the point fires once
    assert again.state == "completed" and not again.device_error


def test_device_errors_are_told_apart_from_other_errors() -> None:
    assert is_device_error(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB"))
    assert is_device_error(RuntimeError("CUDA error: device-side assert triggered"))
    assert is_device_error(RuntimeError("CUBLAS_STATUS_EXECUTION_FAILED when calling cublasSgemm"))
    assert not is_device_error(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_device_error(ValueError("CUDA error"))


def test_weights_and_the_tested_model_end_on_the_cpu_as_copies(digits) -> None:  # type: ignore[no-untyped-def]
    """What is saved and exported comes from CPU copies (on a GPU machine the trial trained on cuda:0)."""
    from hyperflow.components.adapters import adapter_for

    spec = _spec()
    result = train_trial(digits, {"max_epochs": 2}, spec, seed=0)
    assert result.state_dict is not None
    adapter = adapter_for(spec)
    module = adapter.rebuild(digits, {"max_epochs": 2}, result.state_dict)
    first = next(iter(result.state_dict))
    module.state_dict()[first].add_(1.0)  # the module's weights are its own, not the record's
    assert not torch.equal(module.state_dict()[first], result.state_dict[first])
    metrics = adapter.evaluate(module, digits, {"max_epochs": 2})
    assert "test_accuracy" in metrics
    exported, _ = adapter.export(module, digits, {"max_epochs": 2})
    assert all(p.device.type == "cpu" for p in exported.parameters())
    assert all(b.device.type == "cpu" for b in exported.buffers())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_on_a_gpu_the_trial_trains_there_and_hands_back_cpu_weights(digits) -> None:  # type: ignore[no-untyped-def]
    from hyperflow.components.adapters import adapter_for

    spec = _spec(accelerator="gpu", precision="16-mixed")
    assert spec.accelerator == "gpu"
    result = train_trial(digits, {"max_epochs": 3, "learning_rate": 0.05}, spec, seed=0)
    assert result.state == "completed", result.error
    assert result.state_dict is not None and all(t.device.type == "cpu" for t in result.state_dict.values())
    adapter = adapter_for(spec)
    module = adapter.rebuild(digits, {"max_epochs": 3}, result.state_dict)
    adapter.evaluate(module, digits, {"max_epochs": 3})
    assert all(p.device.type == "cpu" for p in module.parameters())


# ------------------------------------------------------------------------------------ slot workers


def report_env(_: int) -> tuple[str | None, int]:
    """Run in a slot's worker: what it sees of the GPUs, and which process it is."""
    return os.environ.get(CUDA_ENV), os.getpid()


def run_out_of_memory(_: int) -> None:
    """Run in a slot's worker: a trial that ran out of GPU memory (as train-trial reports one)."""
    result = TrialResult(params={}, seed=0, state=FAILED, error="OutOfMemoryError: CUDA out of memory")
    result.device_error = True
    raise TrialError(result.error or "", result)


def fail_on_its_own(_: int) -> None:
    """Run in a slot's worker: a trial that failed for a reason of its own (NaN loss)."""
    raise TrialError("training loss became nan", TrialResult(params={}, seed=0, state=FAILED))


def wait_free(runner: Any, n: int, timeout: float = 30.0) -> None:
    """Poll until `n` slots are free: a future's result can be seen before its callbacks have run."""
    deadline = time.monotonic() + timeout
    while runner.free_slots != n:
        assert time.monotonic() < deadline, f"{runner.free_slots} slots free, not {n}"
        time.sleep(0.01)


@pytest.mark.slow
def test_each_slot_worker_sees_only_its_gpus_and_is_restarted_after_a_cuda_error(prefect_server) -> None:  # type: ignore[no-untyped-def]
    from prefect import task

    from hyperflow.flows.slot_runner import SlotTaskRunner

    env_task = task(report_env, name="report-env")
    oom_task = task(run_out_of_memory, name="oom")
    own_task = task(fail_on_its_own, name="nan")
    # Two simulated GPUs, a whole one per trial: two slots, two workers.
    with SlotTaskRunner(gpu_slots(1, [0, 1])) as runner:
        first = [runner.submit(env_task, {"_": i}) for i in range(2)]
        assert runner.free_slots == 0
        seen = [f.result() for f in first]
        assert sorted(env for env, _ in seen) == ["0", "1"], "each worker sees only its own GPU"
        assert len({pid for _, pid in seen}) == 2
        pid_of = dict(seen)
        wait_free(runner, 2)  # finished trials free their slots
        # A trial that fails on its own merits keeps its worker; an out-of-memory one has it replaced.
        with pytest.raises(TrialError):
            runner.submit(own_task, {"_": 0}).result()
        wait_free(runner, 2)
        env, pid = runner.submit(env_task, {"_": 0}).result()
        assert env == "0" and pid == pid_of["0"]
        wait_free(runner, 2)
        with pytest.raises(TrialError, match="CUDA out of memory"):
            runner.submit(oom_task, {"_": 0}).result()
        wait_free(runner, 2)  # a failed trial frees its slot
        env, pid = runner.submit(env_task, {"_": 0}).result()
        assert env == "0", "the restarted worker sees the same GPU"
        assert pid != pid_of["0"], "the worker that saw the CUDA error was replaced"
        assert runner.restarts == {0: 1, 1: 0}


@pytest.mark.slow
def test_an_out_of_memory_trial_fails_with_that_reason_and_the_search_goes_on(  # type: ignore[no-untyped-def]
    prefect_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On one simulated GPU slot (trials train on the CPU inside the slot's worker), each worker's
    second trial runs out of memory: trials 1 and 3 fail, and trial 2 runs in a new worker."""
    from hyperflow.flows import search_flow

    monkeypatch.setattr(search_flow, "trial_slots", lambda runner: gpu_slots(1, [0]))
    monkeypatch.setenv(faults.FAULT_ENV, "cuda-oom:2")
    cfg = small_config(tmp_path, search={"strategy": "random", "n_trials": 4}, model={"max_epochs": 2})
    result = search_flow.run_search(cfg)
    assert result.status == "FINISHED"
    client = MlflowClient(result.tracking_uri)
    runs = client.search_runs([result.experiment_id], f"tags.`mlflow.parentRunId` = '{result.study_run_id}'")
    runs.sort(key=lambda r: int(r.data.tags["hyperflow.trial"]))
    states = [r.data.tags["hyperflow.state"] for r in runs]
    assert states == ["completed", "failed", "completed", "failed"]
    assert "CUDA out of memory" in runs[1].data.tags["hyperflow.error"]
    pids = [r.data.tags["hyperflow.pid"] for r in runs]
    assert pids[0] == pids[1] != pids[2] == pids[3], "the worker was restarted after the OOM"
    assert result.n_completed == 2 and result.n_failed == 2 and result.test_metrics


@pytest.mark.slow
@NO_GPU
def test_a_study_with_accelerator_auto_on_a_cpu_machine_runs_as_before(
    prefect_server, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from hyperflow.flows.search_flow import run_search

    cfg = small_config(tmp_path, runner={"accelerator": "auto"})
    default = small_config(tmp_path)
    result = run_search(cfg)
    assert result.status == "FINISHED" and result.n_completed == 3
    client = MlflowClient(result.tracking_uri)
    pids = {
        r.data.tags["hyperflow.pid"]
        for r in client.search_runs([result.experiment_id], "tags.`hyperflow.role` = 'trial'")
    }
    assert pids == {str(os.getpid())}, "one trial at a time trains in the search's own process, as before"
    from hyperflow.components.fingerprint import config_hash

    assert config_hash(cfg) == config_hash(default)


# ------------------------------------------------------------------------------------ Dask


def test_dask_gpu_trials_ask_for_their_share_of_a_gpu_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    import dask

    from hyperflow.flows import dask_runner

    cfg = small_config(Path("/nonexistent"), runner={"kind": "dask", "gpus_per_trial": 0.5})
    monkeypatch.setattr(dask_runner, "gpu_count", lambda: 0)
    with dask_runner.trial_resources(cfg):
        assert "resources" not in dask.get_annotations(), "CPU trials ask for no GPU"
    monkeypatch.setattr(dask_runner, "gpu_count", lambda: 2)  # a machine with 2 GPUs, simulated
    with dask_runner.trial_resources(cfg):
        assert dask.get_annotations()["resources"] == {"GPU": 0.5}
    remote_gpu = small_config(
        Path("/nonexistent"),
        runner={"kind": "dask", "address": "tcp://gpu-scheduler:8786", "accelerator": "gpu"},
    )
    monkeypatch.setattr(dask_runner, "gpu_count", lambda: 0)  # only the workers have GPUs
    with dask_runner.trial_resources(remote_gpu):
        assert dask.get_annotations()["resources"] == {"GPU": 1.0}


def _worker_gpus(dask_worker: Any = None) -> tuple[str | None, dict[str, float]]:
    """On a worker (Client.run passes it as `dask_worker`; a task finds it): its GPUs and resources."""
    from distributed import get_worker

    worker = dask_worker if dask_worker is not None else get_worker()
    return os.environ.get(CUDA_ENV), dict(worker.state.total_resources)


@pytest.mark.slow
def test_a_local_dask_cluster_on_gpus_has_a_worker_per_slot_seeing_only_its_gpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import dask

    from hyperflow.flows import dask_runner

    # Two simulated GPUs at 1 GPU per trial: two workers, one per GPU.
    monkeypatch.setattr(dask_runner, "trial_slots", lambda runner: gpu_slots(1, [0, 1]))
    cfg = small_config(Path("/nonexistent"), runner={"kind": "dask"})
    with dask_runner.dask_task_runner(cfg) as runner:
        seen = runner.client.run(_worker_gpus)
        assert sorted(env for env, _ in seen.values()) == ["0", "1"]
        assert all(resources == {"GPU": 1.0} for _, resources in seen.values())
        with dask.annotate(resources={"GPU": 1.0}):
            futures = [runner.client.submit(_worker_gpus, pure=False) for _ in range(4)]
        assert {env for env, _ in runner.client.gather(futures)} <= {"0", "1"}


@pytest.mark.slow
def test_a_dask_search_on_simulated_gpus_runs_every_trial_on_a_gpu_worker(  # type: ignore[no-untyped-def]
    prefect_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trials ask for a GPU resource that only the slot workers have; they train on the CPU there."""
    from hyperflow.flows import dask_runner, search_flow

    monkeypatch.setattr(dask_runner, "trial_slots", lambda runner: gpu_slots(0.5, [0]))
    monkeypatch.setattr(dask_runner, "gpu_count", lambda: 1)
    cfg = small_config(
        tmp_path,
        search={"strategy": "random", "n_trials": 3, "n_parallel": 2},
        model={"max_epochs": 2},
        runner={"kind": "dask", "gpus_per_trial": 0.5},
    )
    result = search_flow.run_search(cfg)
    assert result.status == "FINISHED" and result.n_completed == 3
    client = MlflowClient(result.tracking_uri)
    pids = {
        r.data.tags["hyperflow.pid"]
        for r in client.search_runs([result.experiment_id], "tags.`hyperflow.role` = 'trial'")
    }
    assert str(os.getpid()) not in pids and 1 <= len(pids) <= 2, "trials ran on the two slot workers"
