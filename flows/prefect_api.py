"""Which Prefect API a flow run talks to, so that trial workers talk to the same one."""

from __future__ import annotations

__all__ = ["ephemeral_api_url"]


def ephemeral_api_url() -> str | None:
    """The API of the ephemeral Prefect server this flow runs on, or None with a configured server.

    Worker processes that do not know it would each start an ephemeral server of their own (seconds
    of database migrations), and their task runs would be invisible to the flow's.
    """
    from prefect.client.base import ServerType
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value() or FlowRunContext.get() is None:
        return None
    client = get_client(sync_client=True)
    if client.server_type != ServerType.EPHEMERAL:
        return None
    return str(client.api_url).rstrip("/")
