"""Deployments and schedules of the `hyperparameter-search` flow: `hyperflow serve` and prefect.yaml."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.deployments.runner import RunnerDeployment

    from hyperflow.components.config import ExperimentConfig

__all__ = ["FLOW_NAME", "ScheduleError", "check_cron", "deployment_parameters", "serve"]

FLOW_NAME = "hyperparameter-search"

_CRON_HELP = (
    'a cron expression has five fields, minute hour day-of-month month day-of-week: "0 3 * * *" is '
    'every day at 03:00, "*/30 * * * 1-5" every half hour on weekdays'
)


class ScheduleError(ValueError):
    """A schedule that Prefect would refuse; the message says what is wrong."""


def check_cron(expression: str, timezone: str = "UTC") -> CronSchedule:
    """Check a cron expression and time zone exactly as Prefect's schedule will.

    Raises:
        ScheduleError: naming the bad expression or time zone.
    """
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        return CronSchedule(cron=expression, timezone=timezone)
    except ValidationError as exc:
        fields = {str(e["loc"][0]) if e["loc"] else "" for e in exc.errors()}
        reasons = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        if "cron" in fields:
            raise ScheduleError(
                f"--cron {expression!r} is not a valid schedule ({reasons}); {_CRON_HELP}"
            ) from None
        raise ScheduleError(
            f"--timezone {timezone!r} is not an IANA time zone such as UTC or Europe/Berlin ({reasons})"
        ) from None


def deployment_parameters(cfg: ExperimentConfig) -> dict[str, Any]:
    """The deployment's parameters: the whole validated config, as the flow's only parameter."""
    return {"config": cfg.model_dump(mode="json")}


def serve(cfg: ExperimentConfig, *, cron: str, name: str | None = None, timezone: str = "UTC") -> None:
    """Create (or update) the deployment `hyperparameter-search/NAME` and serve its runs until stopped.

    Runs start in a subprocess of this process, one at a time (a search uses every core it is
    given; a run that would overlap waits). Stopping (Ctrl-C, SIGTERM) pauses the schedule.

    Args:
        cfg: the experiment, stored as the deployment's parameter (the Prefect UI shows it as a form).
        cron: when to run, e.g. "0 3 * * *".
        name: the deployment's name; the experiment's name by default.
        timezone: the IANA time zone the cron expression is read in.

    Raises:
        ScheduleError: a cron expression or time zone that Prefect would refuse; nothing was created.
    """
    from prefect import serve as serve_deployments
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    from hyperflow.flows.search_flow import hyperparameter_search

    check_cron(cron, timezone)
    deployment = hyperparameter_search.to_deployment(
        name=name or cfg.name,
        schedules=[Cron(cron, timezone=timezone)],
        parameters=deployment_parameters(cfg),
        description=f"{cfg.search.strategy} search of {cfg.search.metric} for {cfg.name} (hyperflow serve)",
        tags=["hyperflow"],
        # Found by its import path, so an installed wheel serves as well as a checkout.
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    # Each run imports the flow afresh in its own process. (`flow.serve` would instead pickle the
    # flow object by value, and its postponed annotations lose `ExperimentConfig` on the way.)
    serve_deployments(cast("RunnerDeployment", deployment), limit=1)


def ephemeral_warning() -> str | None:
    """Why serving without PREFECT_API_URL is only good for trying it out (None when it is set)."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value() or os.environ.get("PREFECT_API_URL"):
        return None
    return (
        "PREFECT_API_URL is not set: the deployment lives in a temporary Prefect server that stops "
        "with this process. For a lasting schedule start `prefect server start` and set "
        "PREFECT_API_URL=http://127.0.0.1:4200/api"
    )
