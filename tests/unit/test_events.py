"""Events: the body kubectl reads, retries while the API server fails, and the drain at shutdown."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from proxmox_operator.events import BACKOFFS, MAX_MESSAGE, EventPoster, Retryable, event_body

OBJ = {
    "apiVersion": "proxmox-operator.dev/v1alpha1",
    "kind": "ProxmoxCluster",
    "metadata": {"namespace": "team-a", "name": "lab", "uid": "u-1", "resourceVersion": "5"},
}


def test_the_event_names_its_object_and_the_operator() -> None:
    at = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    event = event_body(OBJ, type_="Normal", reason="Registered", message="hello", instance="node-1", at=at)
    assert event["metadata"] == {"namespace": "team-a", "generateName": "proxmox-operator-"}
    assert event["involvedObject"] == {
        "apiVersion": "proxmox-operator.dev/v1alpha1",
        "kind": "ProxmoxCluster",
        "name": "lab",
        "namespace": "team-a",
        "uid": "u-1",
    }
    assert (event["type"], event["reason"], event["message"]) == ("Normal", "Registered", "hello")
    assert (event["reportingComponent"], event["reportingInstance"]) == ("proxmox-operator", "node-1")
    assert event["source"] == {"component": "proxmox-operator"}
    assert event["firstTimestamp"] == event["lastTimestamp"] == at.isoformat()


def test_an_overlong_message_is_cut_in_the_middle_to_the_limit() -> None:
    message = "a" * 800 + "b" * 800
    event = event_body(OBJ, type_="Warning", reason="Unreachable", message=message, instance="i")
    assert len(event["message"]) <= MAX_MESSAGE
    assert event["message"].startswith("a") and event["message"].endswith("b") and " [...] " in event["message"]


class Sender:
    def __init__(self, answers: list[int | Exception]) -> None:
        self.answers = answers
        self.sent: list[dict[str, Any]] = []

    async def __call__(self, namespace: str, body: dict[str, Any]) -> int:
        self.sent.append(body)
        answer = self.answers.pop(0) if self.answers else 201
        if isinstance(answer, Exception):
            raise answer
        return answer


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


async def test_a_failing_api_server_is_retried_and_a_refusal_is_not() -> None:
    send = Sender([Retryable("HTTP 503"), Retryable("ServerDisconnectedError"), 201])
    poster = EventPoster(send, instance="i", sleep=no_sleep)
    poster.post(OBJ, type_="Normal", reason="Registered", message="m")
    await poster.drain()
    assert len(send.sent) == 3
    refused = Sender([403])
    poster = EventPoster(refused, instance="i", sleep=no_sleep)
    poster.post(OBJ, type_="Normal", reason="Deregistered", message="m")
    await poster.drain()
    assert len(refused.sent) == 1


async def test_retries_end_after_the_backoffs_and_a_single_attempt_is_single() -> None:
    failing = Sender([Retryable("down")] * 20)
    poster = EventPoster(failing, instance="i", sleep=no_sleep)
    poster.post(OBJ, type_="Normal", reason="Registered", message="m")
    poster.post(OBJ, type_="Normal", reason="Deregistered", message="m", retry=False)
    await poster.drain()
    assert len(failing.sent) == len(BACKOFFS) + 1 + 1
    assert poster.pending == 0


async def test_drain_waits_for_a_pending_event_and_gives_up_on_a_hung_one() -> None:
    release = asyncio.Event()
    sent: list[str] = []

    async def slow(namespace: str, body: dict[str, Any]) -> int:
        await release.wait()
        sent.append(body["reason"])
        return 201

    poster = EventPoster(slow, instance="i")
    poster.post(OBJ, type_="Normal", reason="Registered", message="m")
    asyncio.get_running_loop().call_later(0.05, release.set)
    await poster.drain(within=10)
    assert sent == ["Registered"]  # posted before drain returned
    release.clear()
    poster.post(OBJ, type_="Normal", reason="Deregistered", message="m")
    await poster.drain(within=0.05)
    assert poster.pending == 0
    assert sent == ["Registered"]
