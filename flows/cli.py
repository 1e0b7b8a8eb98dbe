"""The `hyperflow` command: run, resume, validate, serve, ui, lr-find."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console

import hyperflow  # noqa: F401 - its import sets the runtime defaults before Prefect or MLflow is imported

if TYPE_CHECKING:
    from hyperflow.components.config import ExperimentConfig
    from hyperflow.components.lr_find import FoundRate, NarrowedRange
    from hyperflow.components.study import StudyProgress, StudyResult
    from hyperflow.flows.prefect_api import CommandServer

# Keep this module's imports light: spawned worker processes import the main module again.

app = typer.Typer(
    name="hyperflow",
    help="Hyperparameter search for neural networks: Prefect flows, Lightning trials, MLflow records.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()

EXIT_FAILED = 1  # the study ran but no trial completed
EXIT_BAD_INPUT = 2  # config, data or arguments
# a server it needs cannot be reached: MLflow's tracking server, Prefect's API, Dask's scheduler
EXIT_TRACKING = 3
EXIT_DISK_FULL = 4  # the disk filled during the study: it ended FAILED (or stays resumable)

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a config value: dotted KEY=VALUE, VALUE parsed as YAML."),
]
ConfigArg = Annotated[
    Path, typer.Argument(help="The experiment's YAML file (see conf/).", show_default=False)
]


def _fail(message: str, code: int) -> NoReturn:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _cli_defaults() -> None:
    # A progress bar owns the terminal: Prefect's and MLflow's INFO lines would tear it.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")


def load_checked(
    config: Path,
    overrides: list[str] | None,
    *,
    touch_local_store: bool = True,
    server: CommandServer | None = None,
) -> tuple[ExperimentConfig, Any]:
    """Load and check everything that can be checked before a run exists: config, data, strategy.

    The tracking store is checked too: a server for being reachable, a local SQLite store (which
    opening creates) only when `touch_local_store`. `server` (Prefect's, for a command that runs a
    flow) starts once the config is valid, so that it comes up while the rest is checked.
    """
    from hyperflow.components.config import ConfigError, load_config

    try:
        cfg = load_config(config, overrides or [])
    except ConfigError as exc:
        _fail(str(exc), EXIT_BAD_INPUT)
    if server is not None:
        server.start()
    from hyperflow.components.preflight import PreflightError, preflight
    from hyperflow.components.tracking import resolve_tracking_uri

    is_server = resolve_tracking_uri(cfg.tracking.uri).startswith(("http://", "https://"))
    try:
        data = preflight(cfg, check_tracking=touch_local_store or is_server)
    except PreflightError as exc:
        if server is not None:
            server.stop()
        _fail(str(exc), exc.exit_code)
    return cfg, data


class _Progress:
    """The progress bar: trials done of total, running, best so far, elapsed and remaining."""

    def __init__(self, total: int, metric: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("[bold]trials"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[running]} running"),
            TextColumn("best {task.fields[metric]} {task.fields[best]}"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[eta]}"),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task("search", total=total, running=0, best="-", metric=metric, eta="")

    def __call__(self, p: StudyProgress) -> None:
        eta = p.remaining_seconds
        self.progress.update(
            self.task,
            completed=p.finished,
            total=p.total,
            running=p.running,
            best="-" if p.best_value is None else f"{p.best_value:.4g}",
            eta="" if eta is None else f"~{int(eta // 60)}:{int(eta % 60):02d} left",
        )


def _announce_stop(signum: int) -> None:
    from hyperflow.flows.search_flow import TRIALS_ENDED  # imported by now: a search is running

    name = signal.Signals(signum).name
    if TRIALS_ENDED.is_set():
        console.print(
            f"\n[yellow]{name}: the trials have ended; finishing the study (testing, saving and "
            "registering the best model). Press Ctrl-C again to leave now: the study can be resumed.[/]"
        )
    else:
        console.print(f"\n[yellow]{name}: stopping trials and ending runs...[/]")


def _command_server() -> CommandServer:
    """Prefect's server for a command that runs a flow (not started yet; see `CommandServer`)."""
    from hyperflow.flows.prefect_api import CommandServer

    return CommandServer()


def _run_flow(
    cfg: ExperimentConfig, resume_run_id: str | None = None, server: CommandServer | None = None
) -> StudyResult:
    from hyperflow.flows.prefect_api import ServerStartError, command_server, configured_api_problem

    progress = _Progress(cfg.search.n_trials, cfg.search.metric)
    try:
        # Entered before Prefect is imported here: Prefect reads PREFECT_API_URL when imported.
        with command_server(server) as own_server:
            if own_server is None and (problem := configured_api_problem()):
                _fail(problem, EXIT_TRACKING)  # before any run exists
            from prefect.exceptions import TerminationSignal

            from hyperflow.components.interrupt import stop_on_signals
            from hyperflow.flows.search_flow import (
                PROGRESS_LISTENERS,
                STOP,
                SearchInterrupted,
                run_search,
                study_run_id,
            )

            PROGRESS_LISTENERS.append(progress)
            try:
                # A second Ctrl-C leaves at once (runs were already being ended).
                with stop_on_signals(STOP, _announce_stop), progress.progress:
                    return run_search(cfg, resume_run_id=resume_run_id)
            except (SearchInterrupted, KeyboardInterrupt, TerminationSignal):
                signum = STOP.signum or signal.SIGINT
                interrupted = study_run_id()
                console.print(
                    "[yellow]interrupted: every open run was ended as KILLED.[/]"
                    + (f" Continue it: hyperflow resume {interrupted}" if interrupted else ""),
                    highlight=False,
                    soft_wrap=True,
                )
                raise typer.Exit(128 + int(signum)) from None
            finally:
                PROGRESS_LISTENERS.remove(progress)
    except ServerStartError as exc:
        _fail(str(exc), EXIT_FAILED)


def _print_summary(result: StudyResult, cfg: ExperimentConfig | None = None) -> None:
    from hyperflow.components.tracking import ui_command

    lines = [f"[bold]study run[/]  {result.study_run_id}  ({result.status})"]
    if cfg is not None and cfg.search.heuristic_start != "none":
        lines.append(f"start      {_heuristic_start_line(cfg, result)}")
    lines.append(
        f"trials     {result.n_completed} completed, {result.n_pruned} pruned, {result.n_failed} failed"
        + (f"  (stopped: {result.stop_reason})" if result.stop_reason else "")
    )
    if result.best_params is not None:
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in result.best_params.items())
        lines.append(f"best       trial {result.best_trial}: {result.metric} = {result.best_value:.6g}")
        lines.append(f"params     {params}")
        if result.champion_trial != result.best_trial and result.champion_params is not None:
            # search.select: knee registered another front member: the model tested is that one.
            values = ", ".join(f"{k} = {v:.6g}" for k, v in result.champion_objectives.items())
            params = ", ".join(f"{k}={_fmt(v)}" for k, v in result.champion_params.items())
            lines.append(f"champion   trial {result.champion_trial} (the front's knee): {values}")
            lines.append(f"params     {params}")
        tests = ", ".join(f"{k} = {v:.6g}" for k, v in result.test_metrics.items())
        if tests:  # a training function's study has no model to test
            lines.append(f"test       {tests}")
    if result.model_name:
        moved = "moved to it" if result.promoted else "unchanged"
        lines.append(
            f"model      {result.model_name} version {result.model_version}; champion {moved} ({result.promotion_reason})"
        )
    for err in result.errors[:10]:
        lines.append(f"[red]error[/]      {err}")
    lines.append(f"open it    {ui_command(result.tracking_uri, result.experiment_id, result.study_run_id)}")
    out.print("\n".join(lines), highlight=False, soft_wrap=True)


def _finish(result: StudyResult, cfg: ExperimentConfig) -> None:
    """The summary and the exit code; a full disk is one error line (exit 4)."""
    if result.disk_full:
        _fail(result.disk_full, EXIT_DISK_FULL)
    _print_summary(result, cfg)
    if result.status != "FINISHED":
        raise typer.Exit(EXIT_FAILED)


def _heuristic_start_line(cfg: ExperimentConfig, result: StudyResult) -> str:
    """What the study's heuristic start did, as its study run records it."""
    from mlflow.tracking import MlflowClient

    from hyperflow.components.heuristic import describe_start

    try:
        params = MlflowClient(result.tracking_uri).get_run(result.study_run_id).data.params
    except Exception as exc:  # the summary goes on without it
        return f"{cfg.search.heuristic_start} (not read back: {type(exc).__name__})"
    return describe_start(cfg, dict(params)) or f"{cfg.search.heuristic_start} (not recorded)"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@app.command()
def run(
    config: ConfigArg,
    overrides: SetOption = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the latest unfinished study of this config.")
    ] = False,
) -> None:
    """Run one search: a Prefect flow whose trials are Lightning runs recorded in MLflow."""
    _cli_defaults()
    server = _command_server()
    cfg, _ = load_checked(config, overrides, server=server)
    resume_run_id = None
    if resume:
        from hyperflow.components.resume import find_unfinished_study

        resume_run_id = find_unfinished_study(cfg)
        if resume_run_id is not None:
            console.print(f"resuming study {resume_run_id}")
        if resume_run_id is None:
            console.print("[yellow]no unfinished study of this config: starting a new one[/]")
    result = _run_flow(cfg, resume_run_id, server)
    _finish(result, cfg)


@app.command()
def resume(
    study_run_id: Annotated[str, typer.Argument(help="The study run to continue (printed by `run`).")],
    n_trials: Annotated[
        int | None, typer.Option("--n-trials", help="A new total of trials: extends a finished study.")
    ] = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(help="The tracking store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)."),
    ] = None,
) -> None:
    """Continue an interrupted study, or extend a finished one, in the same study run."""
    _cli_defaults()
    from hyperflow.components.config import ConfigError
    from hyperflow.components.preflight import PreflightError, preflight
    from hyperflow.components.resume import ResumeError, load_study_config
    from hyperflow.components.tracking import TrackingError

    server = _command_server().start()
    try:
        cfg = load_study_config(tracking_uri, study_run_id, n_trials)
        preflight(cfg)
    except (ResumeError, ConfigError) as exc:
        server.stop()
        _fail(str(exc), EXIT_BAD_INPUT)
    except PreflightError as exc:
        server.stop()
        _fail(str(exc), exc.exit_code)
    except TrackingError as exc:
        server.stop()
        _fail(str(exc), EXIT_TRACKING)
    result = _run_flow(cfg, study_run_id, server)
    _finish(result, cfg)


@app.command()
def validate(config: ConfigArg, overrides: SetOption = None) -> None:
    """Check a config and print it resolved, with its search space."""
    from hyperflow.components.describe import describe_config

    _cli_defaults()
    cfg, data = load_checked(config, overrides, touch_local_store=False)
    out.print(describe_config(cfg, data), highlight=False, soft_wrap=True)


@app.command()
def serve(
    config: ConfigArg,
    cron: Annotated[
        str,
        typer.Option(
            help='When to run, as a cron expression: "0 3 * * *" is 03:00 every day.', show_default=False
        ),
    ],
    name: Annotated[
        str | None, typer.Option(help="The deployment's name (default: the config's `name`).")
    ] = None,
    timezone: Annotated[str, typer.Option(help="The time zone the cron expression is read in.")] = "UTC",
    overrides: SetOption = None,
) -> None:
    """Run the search on a schedule: a Prefect deployment with the config as its parameter, served until stopped."""
    from hyperflow.flows.deploy import FLOW_NAME, ScheduleError, check_cron, ephemeral_warning
    from hyperflow.flows.deploy import serve as serve_deployment

    try:
        check_cron(cron, timezone)
    except ScheduleError as exc:
        _fail(str(exc), EXIT_BAD_INPUT)
    cfg, _ = load_checked(config, overrides)
    from hyperflow.flows.prefect_api import configured_api_problem

    problem = configured_api_problem()
    if problem:
        _fail(problem, EXIT_TRACKING)
    warning = ephemeral_warning()
    if warning:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    deployment = f"{FLOW_NAME}/{name or cfg.name}"
    console.print(
        f"serving {deployment!r} on {cron!r} ({timezone}); Ctrl-C stops serving and pauses the schedule",
        highlight=False,
        soft_wrap=True,
    )
    serve_deployment(cfg, cron=cron, name=name, timezone=timezone)


def _lr_find_range(cfg: ExperimentConfig, found: FoundRate) -> tuple[NarrowedRange, str]:
    """The range `lr-find` prints and where its bounds come from.

    A range's bounds are the test's own; choices' are their smallest and largest (the test sweeps the
    default rates for them: its range is narrowed again within those); nothing searched: the swept
    rates.
    """
    from hyperflow.components.config import ChoiceSpec
    from hyperflow.components.lr_find import narrow

    spec = cfg.search.space.get("learning_rate")
    if spec is None:
        return found.narrowed, "the swept rates"
    if isinstance(spec, ChoiceSpec):
        rates = [float(c) for c in spec.choices]
        return narrow(found.result.suggestion, (min(rates), max(rates))), "search.space.learning_rate"
    return found.narrowed, "search.space.learning_rate"


@app.command("lr-find")
def lr_find(config: ConfigArg, overrides: SetOption = None) -> None:
    """The learning-rate range test: print the suggested rate and range, log the plot to an MLflow run."""
    _cli_defaults()
    cfg, data = load_checked(config, overrides)
    if cfg.model.module or data is None:
        _fail(
            "lr-find runs the range test on the built-in model and data (model.module is set)", EXIT_BAD_INPUT
        )
    from hyperflow.components.lr_find import find_learning_rate
    from hyperflow.components.tracking import resolve_tracking_uri, ui_command

    console.print("running the learning-rate range test ...", highlight=False)
    found = find_learning_rate(cfg, data, resolve_tracking_uri(cfg.tracking.uri))
    narrowed, where = _lr_find_range(cfg, found)
    low, high = narrowed.bounds
    lines = [
        "suggested  "
        + (
            "none (the loss diverged too early)"
            if narrowed.raw_suggestion is None
            else f"{narrowed.raw_suggestion:.4g}"
        ),
        f"range      [{narrowed.low:.4g}, {narrowed.high:.4g}]  within {where} [{low:.4g}, {high:.4g}]",
    ]
    if narrowed.note:
        lines.append(f"[yellow]note[/]       {narrowed.note}")
    lines.append(
        f"swept      {found.result.min_lr:.3g} to {found.result.max_lr:.3g} over {len(found.result.lrs)} steps"
    )
    address = ui_command(found.tracking_uri, found.experiment_id, found.run_id, study=False)
    lines.append(f"open it    {address}")
    out.print("\n".join(lines), highlight=False, soft_wrap=True)


@app.command()
def ui(
    config: Annotated[Path | None, typer.Argument(help="A config whose tracking store to open.")] = None,
    port: Annotated[int, typer.Option(help="Port of the MLflow UI.", min=1, max=65535)] = 5000,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
) -> None:
    """Start the MLflow UI on the configured store and print its address."""
    from hyperflow.components.tracking import resolve_tracking_uri

    configured = None
    if config is not None:
        _cli_defaults()
        cfg, _ = load_checked(config, [], touch_local_store=False)
        configured = cfg.tracking.uri
    uri = resolve_tracking_uri(configured)
    if uri.startswith(("http://", "https://")):
        out.print(f"The tracking store is a server: open {uri}")
        return
    taken = _port_taken(host, port)
    if taken:
        _fail(
            f"--port {port}: cannot listen on {host}:{port} ({taken}); choose another --port", EXIT_BAD_INPUT
        )
    # Under a group leader of ours, which ends MLflow's processes even after a kill -9 of this command.
    cmd = [
        sys.executable,
        "-m",
        "hyperflow.flows.ui_group",
        str(os.getpid()),
        "--",
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        host,
        "--port",
        str(port),
    ]
    cmd += ["--workers", "1"]
    env = {
        **os.environ,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false"),
    }
    raise typer.Exit(_serve_ui(cmd, env, f"http://{host}:{port}", uri))


def _port_taken(host: str, port: int) -> str | None:
    """Why `host:port` cannot be listened on (in use, no such interface), or None when it can."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return str(exc)
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _serve_ui(cmd: list[str], env: dict[str, str], url: str, uri: str) -> int:
    """Run MLflow's UI (its process and the uvicorn it starts, in a group of their own led by
    `hyperflow.flows.ui_group`, which ends the group if this command dies) until it
    ends or this command is stopped (Ctrl-C, SIGTERM, or SIGHUP from a closed terminal); the group is
    ended with the command either way.
    Its address is printed once it answers; a UI that ends before that is an error (exit 1)."""
    import subprocess
    import time

    from hyperflow.components.interrupt import detach_hung_up_terminal, stop_signals
    from hyperflow.components.tracking import health_answer

    def interrupt(signum: int, frame: Any) -> None:
        if signum == getattr(signal, "SIGHUP", None):
            detach_hung_up_terminal()  # its terminal is gone: no output may fail the clean-up
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in stop_signals()}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        console.print(f"starting the MLflow UI on {url} (store {uri}) ...", highlight=False)
        while proc.poll() is None:
            answer = health_answer(url, 2.0)
            if isinstance(answer, int) and answer < 400:
                break
            time.sleep(0.2)  # polling a server that is starting: no event to wait on
        if proc.poll() is not None:
            _fail(
                f"the MLflow UI ended before it served (exit code {proc.returncode}); see its error above",
                EXIT_FAILED,
            )
        out.print(f"MLflow UI on {url}  (store {uri}); Ctrl-C stops it", highlight=False)
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        _end_group(proc)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _end_group(proc: Any) -> None:
    """End a process started in a session of its own and what it started (MLflow's uvicorn):
    SIGTERM to the group, then SIGKILL to whatever of it is left."""
    import subprocess

    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)


def main() -> None:
    """The console script's entry point."""
    try:
        app()
    except SystemExit as exc:
        _leave(exc.code)
    _leave(0)


def _leave(code: object) -> NoReturn:
    """Exit without the interpreter's teardown of torch's, Lightning's, MLflow's and Prefect's
    modules (~2 s after every command here; nothing of ours is in it).

    What a normal exit does first is done here too: threading's shutdown (its exit hooks, then
    waiting for threads that are not daemons), the atexit handlers (the MLflow writer's flush,
    multiprocessing's, weakref finalizers: temp folders), logging's shutdown and flushing the
    streams; then `os._exit`.
    """
    import atexit
    import logging
    import threading

    # The interpreter's own first step: threading's exit hooks (which stop thread pools' workers),
    # then it waits for the threads that are not daemons. A Python without it exits normally.
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is None:
        sys.exit(code)  # type: ignore[arg-type]
    shutdown()
    atexit._run_exitfuncs()
    logging.shutdown()
    if isinstance(code, str):  # sys.exit("message"): printed, status 1
        print(code, file=sys.stderr)
    status = code if isinstance(code, int) else 0 if code is None else 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
