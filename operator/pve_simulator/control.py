"""The control listener: plain HTTP on loopback, separate from the PVE API surface.

Endpoints (JSON in and out):

* ``GET /state`` - version, cluster, nodes (with online state and fingerprint), faults, counters;
* ``PUT /faults`` - partial update of :class:`~pve_simulator.faults.Faults`, e.g.
  ``{"latency": 0.2, "refuse_logins": true, "force_status": 596}``; ``DELETE /faults`` resets;
* ``PUT /nodes/<name>`` - ``{"online": false}`` takes a node out of the cluster membership;
* ``POST /counters/reset`` - zero the request counters.

Errors are ``400``/``404`` with ``{"error": "..."}``.  Nothing here is part of Proxmox VE; it exists so
tests and demos can steer a simulator running in another process.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from pve_simulator.state import Simulation

__all__ = ["build_control_app"]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda obj: json.dumps(obj, sort_keys=True))


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


async def _read_object(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body must be JSON"}), content_type="application/json"
        ) from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body must be a JSON object"}), content_type="application/json"
        )
    return data


def build_control_app(sim: Simulation, state: Callable[[], dict[str, Any]]) -> web.Application:
    """The control application for ``sim``; ``state`` renders ``GET /state``."""

    async def get_state(request: web.Request) -> web.Response:
        return _json(state())

    async def put_faults(request: web.Request) -> web.Response:
        changes = await _read_object(request)
        try:
            sim.faults.update(changes)
        except (ValueError, TypeError) as exc:
            return _error(400, str(exc))
        sim.log.info("faults changed: %s", sim.faults.to_dict())
        return _json(sim.faults.to_dict())

    async def delete_faults(request: web.Request) -> web.Response:
        sim.faults.reset()
        sim.log.info("faults reset")
        return _json(sim.faults.to_dict())

    async def put_node(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        changes = await _read_object(request)
        if set(changes) - {"online"}:
            return _error(400, "only 'online' can be changed")
        online = changes.get("online")
        if not isinstance(online, bool):
            return _error(400, "'online' must be a boolean")
        try:
            sim.faults.set_node_online(name, online)
        except KeyError:
            return _error(404, f"no such node '{name}'")
        sim.log.info("node %s is now %s", name, "online" if online else "offline")
        node = sim.cluster.node(name)
        return _json({"name": node.name, "online": node.online})

    async def reset_counters(request: web.Request) -> web.Response:
        sim.counters.reset()
        return _json(sim.counters.snapshot())

    app = web.Application()
    app.router.add_get("/state", get_state)
    app.router.add_put("/faults", put_faults)
    app.router.add_delete("/faults", delete_faults)
    app.router.add_put("/nodes/{name}", put_node)
    app.router.add_post("/counters/reset", reset_counters)
    return app
