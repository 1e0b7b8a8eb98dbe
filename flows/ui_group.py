"""The leader of `hyperflow ui`'s process group: runs MLflow's UI, and ends the group when told to
or when the command is gone.

Run as `python -m hyperflow.flows.ui_group PARENT_PID -- COMMAND...`, in a session of its own. `mlflow
ui` starts uvicorn as a child of its own, so a death signal armed on MLflow's process would leave
uvicorn serving after a kill -9 of the command. This process is armed instead (SIGTERM when the
command dies, even by kill -9; Linux) and on SIGTERM, SIGINT or SIGHUP ends its whole group:
MLflow's process and its uvicorn. Standard library only, so it starts at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from typing import Any

__all__ = ["main"]

GRACE_SECONDS = 10.0  # for the group to end on SIGTERM before SIGKILL


def main(argv: list[str]) -> int:
    from hyperflow.flows.prefect_api import _die_with  # standard library only: imports no Prefect

    parent, separator, *cmd = argv[1:]
    if separator != "--" or not cmd:
        print("usage: python -m hyperflow.flows.ui_group PARENT_PID -- COMMAND...", file=sys.stderr)
        return 2
    _die_with(int(parent), gone_code=0, sig=signal.SIGTERM)()
    child = subprocess.Popen(cmd)  # in this process's group

    def end_group(signum: int, frame: Any) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # the group's signal below reaches this process too
        with contextlib.suppress(ProcessLookupError):
            os.killpg(0, signal.SIGTERM)
        try:
            child.wait(timeout=GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(0, signal.SIGKILL)  # this process included
        os._exit(0)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, end_group)
    return child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
