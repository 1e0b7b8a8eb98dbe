"""The study: the ledger of its trials, planning the next ones, recording results, knowing when to stop."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from hyperflow.components.config_checks import TRIAL_METRICS
from hyperflow.components.diskfull import DiskFull
from hyperflow.components.names import (
    COMPLETED,
    FAILED,
    INTERRUPTED,
    PRUNED,
    TAG_ERROR,
    WEIGHT_HISTOGRAMS,
    FinishedState,
    Mode,
    champion_uri,
)
from hyperflow.components.pareto import knee_index, pareto_front, to_losses
from hyperflow.components.plots import draw_weight_histograms, weight_histograms
from hyperflow.components.scratch import scratch_path
from hyperflow.components.search import Strategy
from hyperflow.components.search._base import derive_seed
from hyperflow.components.search._lookahead import Lookahead, Outcome, StrategyProcess
from hyperflow.components.tracking import StudyTracker, TrialLogger
from hyperflow.components.training import train_trial
from hyperflow.components.trial import TrialResult, TrialSpec

if TYPE_CHECKING:
    from hyperflow.components.config import ExperimentConfig
    from hyperflow.components.curves import StopPolicy, StopRule
    from hyperflow.components.data import Dataset

__all__ = [
    "TRIAL_METRICS",
    "Study",
    "StudyProgress",
    "StudyResult",
    "TrialError",
    "TrialLedger",
    "TrialPlan",
    "TrialRecord",
    "execute_trial",
    "objective_values",
    "trial_seed",
]


def trial_seed(study_seed: int, number: int) -> int:
    """Each trial's own seed, derived from the study seed and the trial number."""
    return derive_seed("trial", study_seed, number)


@dataclass
class TrialPlan:
    """What a trial needs, sent with it to wherever it runs (it pickles)."""

    number: int
    params: dict[str, Any]
    seed: int
    run_id: str
    logger: TrialLogger
    policy: StopPolicy | None = None
    timeout_seconds: float | None = None
    stop_at: float | None = None  # wall-clock end of the study's time budget
    loop_pid: int = field(default_factory=os.getpid)  # the search loop's process


class TrialError(Exception):
    """Raised by the train-trial task for a trial that failed on its own merits.

    It makes the Prefect task run Failed, is never retried, and carries the TrialResult back to
    the search loop.
    """

    def __init__(self, message: str, result: TrialResult) -> None:
        super().__init__(message)
        self.result = result

    def __reduce__(self) -> tuple[Any, ...]:
        return (TrialError, (str(self), self.result))


def execute_trial(
    data: Dataset | None,
    plan: TrialPlan,
    spec: TrialSpec,
    *,
    stop_event: Any = None,
    train: Callable[..., TrialResult] = train_trial,
) -> TrialResult:
    """Train one planned trial and log it to its MLflow run: metrics, weights, state; then end it.

    Runs wherever the trial runs (the caller's thread, a worker process, a Dask worker).
    """
    deadline = time.monotonic() + plan.timeout_seconds if plan.timeout_seconds else None
    result = train(
        data,
        plan.params,
        spec,
        seed=plan.seed,
        stop_policy=plan.policy,
        on_epoch=plan.logger.on_epoch,
        stop_event=stop_event,
        deadline=deadline,
        stop_at=plan.stop_at,
    )
    # The writer uploads from this folder after the trial has reported, and then removes it.
    tmp = scratch_path("trial")
    folder = tmp / "weights"
    folder.mkdir()
    root: list[Path] = []
    if result.state_dict is not None and result.state in (COMPLETED, PRUNED):
        torch.save(result.state_dict, folder / "state_dict.pt")
        params = {k: v for k, v in result.state_dict.items() if k in set(result.param_names)}
        result.histograms = weight_histograms(params or result.state_dict)
        (folder / "histograms.json").write_text(json.dumps(result.histograms, indent=1))
        root.append(draw_weight_histograms(result.histograms, tmp / WEIGHT_HISTOGRAMS))
    plan.logger.finish(result, spec.metric, folder, root_files=root, scratch=tmp)
    if os.getpid() != plan.loop_pid:
        # A worker process may be ended once it reports: its writes are done before it does. In
        # the search loop's process they go on behind the next trial; `set_terminated` is the
        # last of a trial's writes, so a run left RUNNING by a kill is one resume re-asks.
        plan.logger.wait()
    return result


@dataclass
class TrialRecord:
    """A finished trial as the study keeps it (weights only while it is the best)."""

    number: int
    params: dict[str, Any]
    seed: int
    run_id: str
    state: FinishedState
    value: float | None
    curve: list[float] = field(default_factory=list)
    epochs_trained: int = 0
    error: str | None = None
    state_dict: dict[str, torch.Tensor] | None = None
    objectives: tuple[float, ...] | None = None  # `search.objectives`' values, when all are known
    predicted: float | None = None  # the stop rule's predicted final value (`predicted_final_<metric>`)
    max_epochs: int | None = None  # the epochs the trial would have trained, unstopped

    @classmethod
    def finished(
        cls,
        *,
        number: int,
        params: dict[str, Any],
        seed: int,
        run_id: str,
        state: str,
        value: float | None,
        curve: list[float],
        epochs_trained: int,
        error: str | None,
        objectives: Sequence[float | None] | None = None,
        predicted: float | None = None,
        max_epochs: int | None = None,
    ) -> TrialRecord:
        """A record whatever reported the trial: a value that is not finite is none, and a trial
        that is not completed or pruned with a value is failed."""
        value = value if value is not None and math.isfinite(value) else None
        counted: FinishedState = state if state in (COMPLETED, PRUNED) and value is not None else FAILED  # type: ignore[assignment]
        record = cls(number, params, seed, run_id, counted, value, list(curve), epochs_trained, error)
        record.predicted, record.max_epochs = predicted, max_epochs
        if counted != FAILED and objectives is not None:
            known = [float(v) for v in objectives if v is not None and math.isfinite(float(v))]
            if len(known) == len(objectives):
                record.objectives = tuple(known)
        return record


def objective_values(
    cfg: ExperimentConfig, result: TrialResult | None, metrics: dict[str, float] | None = None
) -> list[float | None] | None:
    """Each of `search.objectives`' values for a trial (None: not multi-objective).

    From a live result: the primary is its value, `param_count`, `train_seconds` and
    `epochs_trained` are the result's, any other metric its last epoch's. From a recorded run
    (`metrics`: the run's latest metric values), each metric as logged. A value not logged is None.
    """
    objectives = cfg.search.objectives
    if not objectives:
        return None
    out: list[float | None] = []
    for i, obj in enumerate(objectives):
        if result is None:
            out.append((metrics or {}).get(obj.metric))
        elif i == 0:
            out.append(result.value)
        elif obj.metric in TRIAL_METRICS:
            number = float(getattr(result, obj.metric))
            out.append(number if obj.metric != "param_count" or number > 0 else None)
        else:
            series = result.history.get(obj.metric)
            out.append(series[-1] if series else None)
    return out


class TrialLedger:
    """The one record of a study's finished trials, in the order they finished.

    A live trial's result (`Study.record`) and a trial replayed from MLflow (resume) both enter
    through `add`, the one place where the strategy and the stop rule are told: a resumed study's
    strategy and stop rule are what the uninterrupted study's were.
    """

    def __init__(
        self, strategy: Strategy, stop_rule: StopRule | None, mode: Mode, lookahead: Lookahead | None = None
    ) -> None:
        self.strategy = strategy
        self.stop_rule = stop_rule
        self.mode = mode
        self.lookahead = lookahead
        self.records: list[TrialRecord] = []

    def add(self, record: TrialRecord) -> None:
        """Take a finished trial: tell the strategy (a failure without a value) and the stop rule.

        With lookahead the strategy is told in trial-number order, on the lookahead's thread.
        """
        self.records.append(record)
        outcome = Outcome(
            record.params,
            record.value if record.state != FAILED else None,
            pruned=record.state == PRUNED,
            objectives=record.objectives,
            predicted=record.predicted,
            epochs=record.epochs_trained,
            max_epochs=record.max_epochs,
        )
        if self.lookahead is not None:
            self.lookahead.tell(record.number, outcome)
        else:
            outcome.tell_to(self.strategy)
        if self.stop_rule is not None:
            self.stop_rule.record(record.curve, record.state, number=record.number)

    def count(self, state: str) -> int:
        return sum(r.state == state for r in self.records)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def best(self) -> TrialRecord | None:
        """The best completed trial (pruned and failed trials never count); the earlier one on a tie."""
        done = [r for r in self.records if r.state == COMPLETED and r.value is not None]
        if not done:
            return None
        sign = -1.0 if self.mode == "max" else 1.0
        return min(done, key=lambda r: (sign * float(r.value), r.number))  # type: ignore[arg-type]

    def front(self, modes: Sequence[Mode]) -> list[TrialRecord]:
        """The Pareto front of the completed trials whose objectives are all known, by trial number."""
        done = sorted(
            (r for r in self.records if r.state == COMPLETED and r.objectives is not None),
            key=lambda r: r.number,
        )
        points = [to_losses(r.objectives, modes) for r in done]  # type: ignore[arg-type]
        return [done[i] for i in pareto_front(points)]


class Study:
    """Plans trials from the strategy, records their outcomes and decides when the search ends.

    The search loop (a Prefect flow, or a plain loop in tests and benchmarks) calls `plan()` for
    trials to submit and `record()` as each finishes, in any order. The strategy and the stop
    rule live in the ledger, in the loop's process; trials get a snapshot of the rule when
    planned. `history` (a resumed study's recorded trials) enters the ledger like any result.
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        *,
        strategy: Strategy,
        stop_rule: StopRule | None,
        tracker: StudyTracker,
        experiment_id: str,
        study_run_id: str,
        spec: TrialSpec,
        next_number: int = 0,
        history: Sequence[TrialRecord] = (),
    ) -> None:
        self.cfg = cfg
        # Lookahead: suggestion k from the trials before k - n_parallel, prepared while trials train.
        # A resumed study replays the asks its recorded trials were (their numbers and params).
        self.lookahead = (
            Lookahead(
                # A model-based strategy thinks in a process of its own (bench/overhead.py: on a
                # thread, its fits slowed the training beside them); the others are cheap.
                StrategyProcess(strategy) if cfg.search.strategy == "bayes" else strategy,
                cfg.search.n_parallel,
                start=next_number,
                replay={r.number: r.params for r in history},
            )
            if cfg.search.lookahead
            else None
        )
        tracker.clear_full_disk()  # a new study tries writes again (space may have been freed)
        self._exhausted = False
        self._closed = False
        self._n_infeasible = 0
        self._write_errors: list[str] = []
        self.ledger = TrialLedger(strategy, stop_rule, cfg.search.mode, self.lookahead)
        self.tracker = tracker
        self.experiment_id = experiment_id
        self.study_run_id = study_run_id
        self.spec = spec
        self.next_number = next_number
        self.in_flight: dict[int, TrialPlan] = {}
        self._writes_before: dict[int, int] = {}  # trial number -> writes queued when it was planned
        self.started = time.monotonic()
        self.stop_reason: str | None = None
        self._best_logged: float | None = None
        for record in history:
            self.ledger.add(record)
        self.resumed_finished = self.n_finished  # what a resumed study had finished before this session

    # ----------------------------------------------------------------- counting

    @property
    def strategy(self) -> Strategy:
        return self.ledger.strategy

    @property
    def stop_rule(self) -> StopRule | None:
        return self.ledger.stop_rule

    @property
    def records(self) -> list[TrialRecord]:
        return self.ledger.records

    @property
    def mode(self) -> Mode:
        return self.cfg.search.mode

    def count(self, state: str) -> int:
        return self.ledger.count(state)

    @property
    def n_finished(self) -> int:
        return len(self.ledger)

    @property
    def best(self) -> TrialRecord | None:
        """The best completed trial (pruned and failed trials never count)."""
        return self.ledger.best

    @property
    def objective_modes(self) -> tuple[Mode, ...]:
        return tuple(o.mode for o in self.cfg.search.objectives if o.mode is not None)

    @property
    def front(self) -> list[TrialRecord]:
        """The Pareto front of `search.objectives` (empty without several objectives)."""
        return self.ledger.front(self.objective_modes) if self.cfg.search.objectives else []

    @property
    def champion(self) -> TrialRecord | None:
        """The trial registered as the study's model: the best (primary), or the front's knee
        (`search.select: knee`)."""
        front = self.front
        if self.cfg.search.select != "knee" or not front:
            return self.best
        return front[knee_index([to_losses(r.objectives, self.objective_modes) for r in front])]  # type: ignore[arg-type]

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def time_left(self) -> float | None:
        if self.cfg.search.timeout_minutes is None:
            return None
        return self.cfg.search.timeout_minutes * 60 - self.elapsed()

    def check_stop(self) -> str | None:
        """Why no further trial should start, or None to go on."""
        search = self.cfg.search
        if self.stop_reason:
            return self.stop_reason
        if self.n_finished >= search.n_trials:
            return "budget"
        failed = self.count(FAILED)
        if search.max_failures is not None and failed > search.max_failures:
            self.stop_reason = f"{failed} failed trials exceed search.max_failures ({search.max_failures})"
            return self.stop_reason
        left = self.time_left()
        if left is not None and left <= 0:
            self.stop_reason = f"search.timeout_minutes ({search.timeout_minutes:g}) spent"
            return self.stop_reason
        if self.lookahead is not None and not self.in_flight and not self._exhausted:
            self._exhausted = self.lookahead.exhausted_at(self.next_number)
        if (self._exhausted or (self.lookahead is None and self.strategy.exhausted)) and not self.in_flight:
            limit = search.max_param_count
            if limit is not None and self.n_finished < search.n_trials and (ruled_out := self.n_infeasible):
                # The budget, not the space, ran the strategy out of candidates: say so.
                self.stop_reason = (
                    f"no candidate left within search.max_param_count ({limit:,}): the strategy's "
                    f"candidates were over it ({ruled_out} ruled out), {self.n_finished} of "
                    f"{search.n_trials} trials finished"
                )
                return self.stop_reason
            if search.strategy == "grid":
                return "exhausted"  # a grid's end is its size, which `hyperflow validate` prints
            # random, bayes, genetic: a finite space ran out before n_trials; say so in the summary.
            tried = len({json.dumps(r.params, sort_keys=True, default=str) for r in self.records})
            self.stop_reason = (
                f"the space is exhausted: {tried} distinct point{'s' * (tried != 1)} tried, "
                f"{self.n_finished} of {search.n_trials} trials finished"
            )
            return self.stop_reason
        return None

    @property
    def done(self) -> bool:
        return self.check_stop() is not None and not self.in_flight

    # ----------------------------------------------------------------- the loop

    def plan(self, limit: int | None = None) -> list[TrialPlan]:
        """New trials to submit now: up to `n_parallel` in flight, never past `n_trials`."""
        if self.check_stop() is not None:
            return []
        search = self.cfg.search
        room = min(
            search.n_parallel - len(self.in_flight),
            search.n_trials - self.n_finished - len(self.in_flight),
        )
        if limit is not None:
            room = min(room, limit)
        if room <= 0:
            return []
        plans = []
        timeout = search.trial_timeout_minutes * 60 if search.trial_timeout_minutes else None
        left = self.time_left()
        stop_at = time.time() + left if left is not None else None
        for params in self._ask(room):
            number = self.next_number
            self.next_number += 1
            seed = trial_seed(self.cfg.seed, number)
            run_id = self.tracker.start_trial(
                self.experiment_id,
                self.study_run_id,
                number=number,
                params=params,
                seed=seed,
                log_params=False,
            )
            # The writes queued before this trial trains: done by the time it is recorded.
            self._writes_before[number] = self.tracker.writes_queued()
            plan = TrialPlan(
                number=number,
                params=params,
                seed=seed,
                run_id=run_id,
                logger=TrialLogger(self.tracker.uri, run_id, number=number, params=params),
                policy=self.stop_rule.snapshot(number) if self.stop_rule is not None else None,
                timeout_seconds=timeout,
                stop_at=stop_at,
            )
            self.in_flight[number] = plan
            plans.append(plan)
        if not plans and not self.in_flight:
            self.check_stop()  # the strategy has run out: why (the parameter budget) is the stop reason
        return plans

    def _ask(self, room: int) -> list[dict[str, Any]]:
        """Up to `room` suggestions for the next trial numbers (fewer while lookahead waits for a result)."""
        if self.lookahead is None:
            asked = self.strategy.ask(room)
            if len(asked) < room:  # fewer only when the strategy has nothing new (Strategy.ask)
                self._exhausted = True
            return asked
        search = self.cfg.search
        self.lookahead.set_limit(self.next_number + search.n_trials - self.n_finished - len(self.in_flight))
        # Started at the first plan: what resume requeues before it is asked first, deterministically.
        self.lookahead.start()
        out: list[dict[str, Any]] = []
        for i in range(room):
            ready, params = self.lookahead.take(self.next_number + i)
            if not ready:
                break
            if params is None:
                self._exhausted = True
                break
            out.append(params)
        return out

    def close(self) -> None:
        """Stop preparing suggestions (the search loop is done)."""
        if self.lookahead is not None and not self._closed:
            self._closed = True
            self.lookahead.stop()
            # The strategy that was told everything (in its own process for bayes), read once more.
            with contextlib.suppress(Exception):
                self._n_infeasible = len(self.lookahead.strategy.infeasible)
            self.lookahead.close()

    @property
    def n_infeasible(self) -> int:
        """Candidates the parameter budget ruled out (`n_candidates_infeasible`)."""
        if self.lookahead is None:
            return len(self.strategy.infeasible)
        if not self._closed:
            self.close()
        return self._n_infeasible

    def record(self, plan: TrialPlan, result: TrialResult) -> TrialRecord | None:
        """Take a finished trial's result into the ledger, keep the best's weights.

        An interrupted trial is not counted: its parameters go back to the strategy.
        """
        self.in_flight.pop(plan.number, None)
        writes_before = self._writes_before.pop(plan.number, 0)
        if result.state == INTERRUPTED:
            if self.lookahead is not None:
                self.lookahead.tell(plan.number, Outcome(plan.params, None, skipped=True))
            else:
                self.strategy.release(plan.params)
            return None
        record = TrialRecord.finished(
            number=plan.number,
            params=plan.params,
            seed=plan.seed,
            run_id=plan.run_id,
            state=result.state,
            value=result.value,
            curve=result.curve,
            epochs_trained=result.epochs_trained,
            error=result.error,
            objectives=objective_values(self.cfg, result),
            predicted=result.predicted_final,
            max_epochs=self.spec.max_epochs(plan.params),
        )
        previous_best = self.best
        self.ledger.add(record)
        if self.best is record:
            record.state_dict = result.state_dict
            if previous_best is not None:
                previous_best.state_dict = None
            self._log_running_best(record)
        # The writer may lag one trial behind the loop (the trials before this one), no more: a
        # store that refuses them is seen here, with at most this trial trained meanwhile.
        self.tracker.wait_for_writes(writes_before)
        self.end_if_disk_full()
        return record

    def settle_writes(self) -> None:
        """After the last trial: its writes done, and a full disk among them ends the study
        (DiskFull), as after any other trial."""
        self._write_errors.extend(self.tracker.flush_writes())
        self.end_if_disk_full()

    def end_if_disk_full(self) -> None:
        """A full disk ends the study (nothing more can be kept): the trial whose records it
        refused is failed, and DiskFull goes up to the search loop.

        The trials' writes go on behind the loop, so this sees a refusal one trial late at most.
        """
        full = self.tracker.full_disk()
        if full is None:
            return
        self.flush_writes(timeout=60)  # what was queued is tried (skipped) and counted first
        for r in list(self.records):
            with contextlib.suppress(Exception):  # the store is likely full too
                if r.run_id == full.run_id and r.state != FAILED:
                    r.state, r.error = FAILED, full.message
                    self.tracker.mark_trial(r.run_id, FAILED, full.message, number=r.number)
                elif r.run_id in full.skipped:
                    # Trained while the refused write was tried, its records incomplete: not
                    # counted, and resume asks it again.
                    self.records.remove(r)
                    self.tracker.mark_trial(r.run_id, INTERRUPTED, full.message, number=r.number)
        raise DiskFull(full.message)

    def requeue(self, params: dict[str, Any]) -> None:
        """Ask these parameters again before anything new (a trial a killed process left running)."""
        if self.lookahead is not None:
            self.lookahead.requeue(params)
        else:
            self.strategy.requeue(params)

    def record_crash(self, plan: TrialPlan, error: str) -> TrialRecord:
        """A trial whose process or task failed before it could report: failed, logged here."""
        result = TrialResult(params=plan.params, seed=plan.seed, state=FAILED, error=error)
        with contextlib.suppress(Exception):  # the store may be what failed; the study goes on
            self.tracker.mark_trial(plan.run_id, FAILED, error, number=plan.number)
        record = self.record(plan, result)
        assert record is not None
        return record

    def progress(self) -> StudyProgress:
        best = self.best
        return StudyProgress(
            finished=self.n_finished,
            total=self.cfg.search.n_trials,
            running=len(self.in_flight),
            completed=self.count(COMPLETED),
            pruned=self.count(PRUNED),
            failed=self.count(FAILED),
            best_value=best.value if best else None,
            metric=self.cfg.search.metric,
            elapsed=self.elapsed(),
            resumed=self.resumed_finished,
        )

    def abort(self, state: Literal["interrupted", "failed"], error: str | None = None) -> bool:
        """End what is open after an interruption or a crash: trials in flight, then the study run.

        Trials still in flight are marked interrupted (KILLED); the study run is KILLED when
        interrupted, FAILED otherwise. Nothing is left RUNNING, unless the store itself cannot be
        written (a full disk): then False, and the study stays resumable as a killed one is. Queued writes
        (per-epoch metrics of the trials that just stopped) are written first.
        """
        self.close()
        self.flush_writes(timeout=60)
        for plan in list(self.in_flight.values()):
            with contextlib.suppress(Exception):
                self.tracker.mark_trial(
                    plan.run_id, INTERRUPTED, error or "the study was interrupted", number=plan.number
                )
            self.in_flight.pop(plan.number, None)
        try:
            if error and state == FAILED:
                self.tracker.set_tags(self.study_run_id, {TAG_ERROR: error[:5000]})
            self.tracker.end_run(self.study_run_id, "KILLED" if state == INTERRUPTED else "FAILED")
        except Exception:
            return False
        return True

    def result_so_far(self, status: str) -> StudyResult:
        """What the study has, as a result, when it ends without `finish_study` (no model, no test)."""
        best = self.best
        return StudyResult(
            study_run_id=self.study_run_id,
            experiment_id=self.experiment_id,
            tracking_uri=self.tracker.uri,
            metric=self.cfg.search.metric,
            mode=self.cfg.search.mode,
            status=status,
            best_params=best.params if best is not None else None,
            best_value=best.value if best is not None else None,
            best_trial=best.number if best is not None else None,
            best_run_id=best.run_id if best is not None else None,
            n_completed=self.count(COMPLETED),
            n_pruned=self.count(PRUNED),
            n_failed=self.count(FAILED),
            stop_reason=self.stop_reason,
            errors=[f"trial {r.number}: {r.error}" for r in self.records if r.state == FAILED and r.error],
        )

    def _log_running_best(self, record: TrialRecord) -> None:
        # One point each time the best improves, at step = trials finished so far - 1 (the trial
        # number when trials run one at a time): strictly increasing steps, never a step-0 echo,
        # and the latest point is the study's best also when parallel trials finish out of order.
        if record.value is None or record.value == self._best_logged:
            return
        self._best_logged = record.value
        self.tracker.submit_metrics(
            self.study_run_id, {f"best_{self.cfg.search.metric}": record.value}, step=self.n_finished - 1
        )

    def flush_writes(self, timeout: float | None = None) -> list[str]:
        """Wait for the writes queued in this process (trials' metrics, ends of runs);
        the ones that failed after their retries."""
        errors = self._write_errors + self.tracker.flush_writes(timeout)
        self._write_errors = []
        return errors

    def log_final_best(self) -> None:
        """Make the latest `best_<metric>` the study's best (a resumed study's best may come from before)."""
        best = self.best
        if best is None or best.value is None:
            return
        self.flush_writes()
        name = f"best_{self.cfg.search.metric}"
        history = self.tracker.client.get_metric_history(self.study_run_id, name)
        last = max(history, key=lambda m: m.step, default=None)
        if last is not None and last.value == best.value:
            return
        step = max(self.n_finished - 1, last.step + 1 if last is not None else 0)
        self.tracker.log_metrics(self.study_run_id, {name: best.value}, step=step)


# --------------------------------------------------------------------------------------------
# Progress, results, and opening / finishing a study


@dataclass(frozen=True)
class StudyProgress:
    """A snapshot for progress displays."""

    finished: int
    total: int
    running: int
    completed: int
    pruned: int
    failed: int
    best_value: float | None
    metric: str
    elapsed: float
    resumed: int = 0  # of `finished`, those a resumed study had before this session (not in `elapsed`)

    @property
    def remaining_seconds(self) -> float | None:
        """A plain estimate: the mean time per trial finished in this session times the trials left."""
        done_here = self.finished - self.resumed
        if done_here <= 0:
            return None
        return self.elapsed / done_here * max(self.total - self.finished, 0)


@dataclass
class StudyResult:
    """What a search returns (and the CLI prints)."""

    study_run_id: str
    experiment_id: str
    tracking_uri: str
    metric: str
    mode: str
    status: str
    best_params: dict[str, Any] | None = None
    best_value: float | None = None
    best_trial: int | None = None
    best_run_id: str | None = None
    champion_trial: int | None = None  # the trial registered (search.select: the best, or the knee)
    champion_params: dict[str, Any] | None = None
    # The champion's value of each of `search.objectives` (several objectives only), by metric.
    champion_objectives: dict[str, float] = field(default_factory=dict)
    test_metrics: dict[str, float] = field(default_factory=dict)
    n_completed: int = 0
    n_pruned: int = 0
    n_failed: int = 0
    model_name: str | None = None
    model_version: str | None = None
    promoted: bool = False
    promotion_reason: str | None = None
    stop_reason: str | None = None
    errors: list[str] = field(default_factory=list)
    # Set when the study ended because the disk is full: the one line to print (the CLI exits 4).
    disk_full: str | None = None

    @property
    def champion_uri(self) -> str | None:
        return champion_uri(self.model_name) if self.model_name else None

    @property
    def model_uri(self) -> str | None:
        # A study of a training function has a best trial but no model (and so no test metrics).
        return f"runs:/{self.study_run_id}/best_model" if self.test_metrics else None
