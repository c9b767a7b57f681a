"""The control listener: plain HTTP on loopback, separate from the PVE API surface.

Endpoints (JSON in and out):

* ``GET /state`` - version, cluster, node URLs, nodes (online state, listening state, fingerprints,
  per-node faults and counters), cluster-wide faults, counters;
* ``PUT /faults`` - partial update of the cluster-wide :class:`~pve_simulator.faults.Faults`, e.g.
  ``{"latency": 0.2, "refuse_logins": true, "force_status": 503, "retry_after": 2, "reset": 1}``;
  ``DELETE /faults`` removes every fault (cluster-wide and per node);
* ``PUT /nodes/<name>/faults`` - the same for one node only; ``DELETE /nodes/<name>/faults`` resets it;
* ``PUT /nodes/<name>`` - ``{"online": false}`` takes a node out of the cluster membership,
  ``{"listening": false}`` stops its pveproxy (connections refused), ``true`` starts it again; both
  keys may be given together;
* ``GET /nodes/<name>/counters`` - the node's counters; with ``?window=SECONDS`` also
  ``max_requests_in_window``, the most requests that arrived within any window that long;
* ``GET /counters/virtual-clusters`` - arrival times (``time.monotonic()`` of the simulator's host) of the
  requests to each virtual cluster, ``{"now": T, "arrivals": {"<k>": [t, ...]}}``; ``?since=T`` only those from T;
* ``POST /counters/reset`` - zero the request counters (cluster-wide and per node).

Errors are ``400``/``404`` with ``{"error": "..."}``.  Nothing here is part of Proxmox VE; it exists so
tests and demos can steer a simulator running in another process.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from pve_simulator.faults import FaultSet
from pve_simulator.state import Simulation

__all__ = ["SetListening", "build_control_app"]

#: ``await set_listening(node, listening)``: stop or start a node's listener.
SetListening = Callable[[str, bool], Awaitable[None]]


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


class _Control:
    """The handlers of the control application."""

    def __init__(
        self, sim: Simulation, state: Callable[[], dict[str, Any]], set_listening: SetListening | None
    ) -> None:
        self.sim = sim
        self.state = state
        self.set_listening = set_listening

    async def get_state(self, request: web.Request) -> web.Response:
        return _json(self.state())

    def _update(self, faults: FaultSet, changes: dict[str, Any], what: str) -> web.Response:
        try:
            faults.update(changes)
        except (ValueError, TypeError) as exc:
            return _error(400, str(exc))
        self.sim.log.info("%s faults changed: %s", what, faults.to_dict())
        return _json(faults.to_dict())

    async def put_faults(self, request: web.Request) -> web.Response:
        return self._update(self.sim.faults, await _read_object(request), "cluster-wide")

    async def delete_faults(self, request: web.Request) -> web.Response:
        self.sim.faults.reset()
        self.sim.log.info("faults reset")
        return _json(self.sim.faults.to_dict())

    async def put_node_faults(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        changes = await _read_object(request)
        if name not in self.sim.cluster.nodes:
            return _error(404, f"no such node '{name}'")
        return self._update(self.sim.faults.node(name), changes, f"node {name}")

    async def delete_node_faults(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.sim.cluster.nodes:
            return _error(404, f"no such node '{name}'")
        faults = self.sim.faults.node(name)
        faults.reset()
        self.sim.log.info("node %s faults reset", name)
        return _json(faults.to_dict())

    async def put_node(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        changes = await _read_object(request)
        if not changes or set(changes) - {"online", "listening"}:
            return _error(400, "only 'online' and 'listening' can be changed")
        for key in ("online", "listening"):
            if key in changes and not isinstance(changes[key], bool):
                return _error(400, f"'{key}' must be a boolean")
        if name not in self.sim.cluster.nodes:
            return _error(404, f"no such node '{name}'")
        listening = changes.get("listening")
        if listening is not None:
            if self.set_listening is None:
                return _error(400, "listeners cannot be controlled here")
            try:
                await self.set_listening(name, listening)
            except KeyError as exc:
                return _error(400, str(exc.args[0]) if exc.args else "node has no listener")
            except OSError as exc:
                return _error(409, f"cannot listen: {exc}")
        online = changes.get("online")
        if online is not None:
            self.sim.faults.set_node_online(name, online)
            self.sim.log.info("node %s is now %s", name, "online" if online else "offline")
        node = self.sim.cluster.node(name)
        result: dict[str, Any] = {"name": node.name, "online": node.online}
        if listening is not None:
            result["listening"] = listening
        return _json(result)

    async def get_node_counters(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        counters = self.sim.node_counters.get(name)
        if counters is None:
            return _error(404, f"no such node '{name}'")
        result = counters.snapshot()
        window = request.query.get("window")
        if window is not None:
            try:
                seconds = float(window)
            except ValueError:
                seconds = math.nan
            if not seconds > 0 or math.isinf(seconds):
                return _error(400, "window must be a number of seconds > 0")
            result["max_requests_in_window"] = counters.max_requests_in_any_window(seconds)
        return _json(result)

    async def get_virtual_arrivals(self, request: web.Request) -> web.Response:
        since: float | None = None
        if "since" in request.query:
            try:
                since = float(request.query["since"])
            except ValueError:
                return _error(400, "since must be a number (time.monotonic() seconds)")
        arrivals = self.sim.counters.virtual_cluster_arrivals(since)
        return _json({"now": time.monotonic(), "arrivals": {str(k): v for k, v in sorted(arrivals.items())}})

    async def reset_counters(self, request: web.Request) -> web.Response:
        self.sim.counters.reset()
        for counters in self.sim.node_counters.values():
            counters.reset()
        return _json(self.sim.counters.snapshot())


def build_control_app(
    sim: Simulation, state: Callable[[], dict[str, Any]], set_listening: SetListening | None = None
) -> web.Application:
    """The control application for ``sim``; ``state`` renders ``GET /state``.

    ``set_listening`` stops/starts node listeners (``PUT /nodes/<name>`` with ``listening``); without
    it that key is rejected.
    """
    control = _Control(sim, state, set_listening)
    app = web.Application()
    app.router.add_get("/state", control.get_state)
    app.router.add_put("/faults", control.put_faults)
    app.router.add_delete("/faults", control.delete_faults)
    app.router.add_put("/nodes/{name}", control.put_node)
    app.router.add_put("/nodes/{name}/faults", control.put_node_faults)
    app.router.add_delete("/nodes/{name}/faults", control.delete_node_faults)
    app.router.add_get("/nodes/{name}/counters", control.get_node_counters)
    app.router.add_get("/counters/virtual-clusters", control.get_virtual_arrivals)
    app.router.add_post("/counters/reset", control.reset_counters)
    return app
