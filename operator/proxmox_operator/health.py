"""The health endpoint of a replica under leader election: it answers for a standby too.

kopf's own liveness endpoint (``--liveness`` without ``--leader-elect``) runs inside kopf, and a standby never
starts kopf (so it cannot probe, post Events or touch finalizers). This endpoint serves the same URL from the
first moment, for both roles, and says in its JSON body which one this replica has:
``{"role": "active"|"standby", "identity": ..., "holder": ..., "lease": "namespace/name"}``.

It answers 200 for both roles, and both the liveness and the readiness probe call it: a standby is ready to take
over, and a Deployment of two replicas must see both Ready, or a RollingUpdate would wait for ever for the new
standby and a PodDisruptionBudget would never allow the leader's node to be drained.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web


async def serve(url: str, report: Callable[[], dict[str, Any]]) -> web.AppRunner:
    """Serve ``report()`` as JSON at ``url`` (e.g. ``http://0.0.0.0:8080/healthz``); the caller cleans it up."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.port is None:
        raise ValueError(f"health endpoint must be http://HOST:PORT/PATH, not {url!r}")

    async def health(_: web.Request) -> web.Response:
        return web.json_response(report())

    app = web.Application()
    app.add_routes([web.get(parts.path or "/", health)])
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, parts.hostname or "0.0.0.0", parts.port).start()  # noqa: S104 - as the caller says
    return runner
