"""The Argo CD health check in deploy/argocd/health.lua, run as Argo CD runs it.

The real script runs in Lua 5.4 (lupa) inside a sandbox shaped like the one Argo CD gives a script from
argocd-cm (argo-cd util/lua/lua.go, ``runLua``): only the base functions and ``table``; no ``string`` or
``math`` library and no string methods. ``obj`` is the object JSON-decoded the way Argo CD hands it over
(``decodeValue``): objects become tables, arrays become sequences without their nulls (gopher-lua's
``LTable.Append`` drops nil), numbers are numbers, booleans booleans, null is absent. The result must be what
Argo CD accepts: a table whose ``status`` is one of its health codes and whose ``message`` is a string.

Argo CD itself interprets the script with gopher-lua (Lua 5.1 syntax); a static scan checks that the script
uses nothing newer.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from lupa import lua54

from proxmox_operator.api.v1alpha1 import REASONS, Reason
from proxmox_operator.api.v1alpha1 import ConditionType as Type
from proxmox_operator.api.v1alpha1.conditions import ready_reasons
from proxmox_operator.controller.outcome import Outcome, cond_true
from proxmox_operator.controller.status import next_status, probing_status

ROOT = Path(__file__).resolve().parents[2]
HEALTH_LUA = ROOT / "deploy" / "argocd" / "health.lua"
README = ROOT / "deploy" / "argocd" / "README.md"
# argo-cd util/settings/settings.go: keys `resource.customizations.<type>.<group>_<kind>`, split on the first
# three dots, then `_` → `/`: this key configures the health check of proxmox-operator.dev/ProxmoxCluster.
ARGOCD_CM_KEY = "resource.customizations.health.proxmox-operator.dev_ProxmoxCluster"
# gitops-engine pkg/health: the codes Argo CD accepts; anything else becomes Unknown "Lua returned an invalid
# health status".
HEALTH_CODES = frozenset({"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"})
# The base library as gopher-lua opens it (lua.OpenBase), minus loaders the script has no business using.
BASE_FUNCTIONS = (
    "assert",
    "error",
    "getmetatable",
    "ipairs",
    "next",
    "pairs",
    "pcall",
    "print",
    "rawequal",
    "rawget",
    "rawset",
    "select",
    "setmetatable",
    "tonumber",
    "tostring",
    "type",
    "xpcall",
)


@dataclass(frozen=True)
class Health:
    status: str
    message: str


def to_lua(runtime: Any, value: Any) -> Any:
    """A JSON value as Argo CD's decodeValue hands it to Lua (recursively; null dropped)."""
    if isinstance(value, dict):
        table = runtime.table()
        for key, item in value.items():
            if item is not None:
                table[key] = to_lua(runtime, item)
        return table
    if isinstance(value, list):
        table = runtime.table()
        index = 0
        for item in value:
            if item is not None:
                index += 1
                table[index] = to_lua(runtime, item)
        return table
    return value


def evaluate(obj: Any, script: str | None = None) -> Health:
    """Run the health check on ``obj`` in a fresh Argo-CD-shaped sandbox; check the result's shape."""
    source = HEALTH_LUA.read_text() if script is None else script
    runtime = lua54.LuaRuntime(unpack_returned_tuples=True)
    g = runtime.globals()
    env = runtime.table()
    for name in BASE_FUNCTIONS:
        env[name] = g[name]
    env["table"] = g.table
    env["_VERSION"] = g._VERSION
    env["_G"] = env
    if obj is not None:
        env["obj"] = to_lua(runtime, obj)
    # Without the string library gopher-lua gives strings no methods: ("x"):len() fails there, so here too.
    runtime.execute('getmetatable("").__index = nil')
    run = runtime.eval(
        "function(source, env) local chunk, err = load(source, '=health.lua', 't', env);"
        " if chunk == nil then error('does not compile: ' .. err, 0) end; return chunk() end"
    )
    result = run(source, env)
    assert runtime.eval("type")(result) == "table", f"health.lua returned {result!r}, not a table"
    fields = dict(result.items())
    assert set(fields) <= {"status", "message"}, fields
    assert fields.get("status") in HEALTH_CODES, fields
    assert isinstance(fields.get("message"), str), fields
    return Health(fields["status"], fields["message"])


# --- objects as the operator writes them --------------------------------------------------------------------

T = "2026-11-29T12:00:00Z"
READY_MESSAGE = "logged in to https://pve1.example.com:8006 (token) as root@pam!operator; Proxmox VE 8.4.1, 3 nodes"


def cond(type_: str, status: str, reason: str, message: str = "", generation: int | None = 1) -> dict[str, Any]:
    c: dict[str, Any] = {"type": type_, "status": status, "reason": reason, "message": message}
    c["lastTransitionTime"] = T
    if generation is not None:
        c["observedGeneration"] = generation
    return c


def pxc(
    *conditions: dict[str, Any],
    generation: Any = 1,
    observed: Any = 1,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A ProxmoxCluster as read from the API server, with the status the operator wrote."""
    metadata: dict[str, Any] = {
        "name": "lab",
        "namespace": "infra",
        "uid": "0b5e7c1e-8d7a-4e52-9a43-5c1a2b3c4d5e",
        "generation": generation,
        "resourceVersion": "4242",
        "creationTimestamp": T,
        "finalizers": ["proxmox-operator.dev/finalizer"],
    }
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "proxmox-operator.dev/v1alpha1",
        "kind": "ProxmoxCluster",
        "metadata": metadata,
        "spec": {"endpoint": "https://pve1.example.com:8006", "credentialsRef": {"name": "pve-token"}},
        "status": {
            "observedGeneration": observed,
            "version": {"version": "8.4.1", "release": "8.4"},
            "nodeCount": 3,
            "lastProbeTime": T,
            "conditions": list(conditions),
        },
    }


def ready(generation: int | None = 1) -> dict[str, Any]:
    return cond(Type.READY, "True", Reason.REGISTERED, READY_MESSAGE, generation)


def healthy_pxc() -> dict[str, Any]:
    return pxc(
        ready(),
        cond(Type.AUTHENTICATED, "True", Reason.LOGGED_IN),
        cond(Type.REACHABLE, "True", Reason.CONNECTED),
        cond(Type.TLS_VERIFIED, "True", Reason.VERIFIED),
        cond(Type.QUORATE, "True", Reason.QUORATE),
        cond(Type.PERMISSIONS, "True", Reason.SUFFICIENT),
    )


PAUSED_ANNOTATION = {"proxmox-operator.dev/paused": "true"}
PAUSED_MESSAGE = "probes are paused by the annotation proxmox-operator.dev/paused; remove it to resume"


# --- Healthy --------------------------------------------------------------------------------------------


def test_ready_true_for_the_current_generation_is_healthy_with_the_ready_message() -> None:
    assert evaluate(healthy_pxc()) == Health("Healthy", READY_MESSAGE)


def test_healthy_needs_no_observed_generation_on_the_ready_condition() -> None:
    """The condition's observedGeneration is optional (metav1.Condition); status.observedGeneration decides."""
    assert evaluate(pxc(ready(generation=None))) == Health("Healthy", READY_MESSAGE)


def test_healthy_with_an_empty_ready_message_still_says_something() -> None:
    obj = pxc(cond(Type.READY, "True", Reason.REGISTERED, ""))
    assert evaluate(obj) == Health("Healthy", "Ready")


def test_ready_is_the_summary_a_false_detail_condition_does_not_override_it() -> None:
    """Ready=True means the operator weighed every other condition and found the cluster registered."""
    obj = pxc(ready(), cond(Type.QUORATE, "False", Reason.QUORUM_LOST, "2 of 3 votes"))
    assert evaluate(obj).status == "Healthy"


# --- Progressing: not caught up yet ---------------------------------------------------------------------


def test_no_status_before_the_first_probe_is_progressing() -> None:
    obj = pxc()
    del obj["status"]
    health = evaluate(obj)
    assert health.status == "Progressing"
    assert "no status yet" in health.message


def test_empty_conditions_before_the_first_probe_are_progressing() -> None:
    health = evaluate(pxc())
    assert health.status == "Progressing"
    assert "no Ready condition yet" in health.message


def test_conditions_without_ready_are_progressing() -> None:
    health = evaluate(pxc(cond(Type.AUTHENTICATED, "True", Reason.LOGGED_IN)))
    assert health.status == "Progressing"
    assert "no Ready condition yet" in health.message


def test_an_older_observed_generation_is_progressing_even_when_ready() -> None:
    health = evaluate(pxc(ready(generation=1), generation=2, observed=1))
    assert health.status == "Progressing"
    assert "metadata.generation is 2, status.observedGeneration is 1" in health.message
    assert "last reported: Ready=True, Registered" in health.message


def test_a_failure_reported_for_an_older_generation_is_progressing_not_degraded() -> None:
    """The user may just have fixed the spec: an old failure says nothing about the new one."""
    failed = cond(Type.READY, "False", Reason.TLS_ERROR, "certificate verify failed", generation=1)
    health = evaluate(pxc(failed, generation=2, observed=1))
    assert health.status == "Progressing"
    assert "last reported: Ready=False, TLSError" in health.message


def test_a_stale_ready_condition_in_a_current_status_is_progressing() -> None:
    health = evaluate(pxc(ready(generation=1), generation=2, observed=2))
    assert health.status == "Progressing"
    assert "the Ready condition describes generation 1, metadata.generation is 2" in health.message


def test_a_status_without_observed_generation_is_progressing() -> None:
    health = evaluate(pxc(ready(), observed=None))
    assert health.status == "Progressing"
    assert "status.observedGeneration is not set" in health.message


def test_ready_unknown_for_the_current_generation_is_progressing() -> None:
    """Unknown: the operator has not decided yet (e.g. a probe in flight). A wait, not a failure."""
    obj = pxc(cond(Type.READY, "Unknown", Reason.NOT_CHECKED, "first probe in progress"))
    assert evaluate(obj) == Health(
        "Progressing", "Waiting for the operator to decide: NotChecked: first probe in progress"
    )


# --- Degraded -------------------------------------------------------------------------------------------


def test_ready_false_for_the_current_generation_is_degraded_with_reason_and_message() -> None:
    message = "https://pve1.example.com:8006 rejected the login for root@pam: authentication failure"
    obj = pxc(
        cond(Type.READY, "False", Reason.AUTHENTICATION_FAILED, message),
        cond(Type.AUTHENTICATED, "False", Reason.AUTHENTICATION_FAILED),
    )
    assert evaluate(obj) == Health("Degraded", f"AuthenticationFailed: {message}")


def test_degraded_without_a_message_shows_the_reason() -> None:
    assert evaluate(pxc(cond(Type.READY, "False", Reason.UNREACHABLE))) == Health("Degraded", "Unreachable")


# --- every Ready reason as the operator writes it, Reconciling and Stalled included --------------------------------
#
# Ready decides; Reconciling and Stalled (kstatus' conditions, see the README's GitOps health) follow from it and
# change nothing here: a failure is Degraded whether it stalls (kstatus: Failed) or is retried (kstatus:
# InProgress), a first probe under way (Probing) is Progressing, and a pause stays Suspended.


def written(reason: Reason, *, paused: bool = False) -> dict[str, Any]:
    """A ProxmoxCluster whose status next_status computed for an outcome with ``reason``."""
    outcome = Outcome(ready=reason is Reason.REGISTERED, reason=reason, message=f"{reason} happened")
    extra = {Type.PAUSED: cond_true(Reason.PAUSED, outcome.message)} if paused else {}
    at = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
    status = next_status(None, outcome, generation=1, at=at, interval=60, extra=extra)
    obj = pxc()
    obj["status"] = status.model_dump(by_alias=True, mode="json")
    return obj


@pytest.mark.parametrize("reason", [r for r in ready_reasons() if r not in (Reason.REGISTERED, Reason.PROBING)])
def test_every_failure_is_degraded_whether_it_stalls_or_is_retried(reason: Reason) -> None:
    obj = written(reason)
    kstatus_condition = Type.STALLED if REASONS[reason].stalled else Type.RECONCILING
    assert kstatus_condition in {c["type"] for c in obj["status"]["conditions"]}
    assert evaluate(obj) == Health("Degraded", f"{reason}: {reason} happened")


def test_a_registered_cluster_as_written_is_healthy() -> None:
    assert evaluate(written(Reason.REGISTERED)) == Health("Healthy", "Registered happened")


def test_a_first_probe_under_way_is_progressing() -> None:
    obj = pxc()
    at = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
    obj["status"] = probing_status(None, generation=1, at=at).model_dump(by_alias=True, mode="json")
    health = evaluate(obj)
    assert health.status == "Progressing"
    assert health.message.startswith("Waiting for the operator to decide: Probing: ")


def test_a_paused_cluster_as_written_is_suspended_though_stalled() -> None:
    obj = written(Reason.PAUSED, paused=True)
    assert {"Stalled", "Paused"} <= {c["type"] for c in obj["status"]["conditions"]}
    assert evaluate(obj).status == "Suspended"


# --- Suspended ------------------------------------------------------------------------------------------


def test_paused_is_suspended_and_says_how_to_resume() -> None:
    # What the operator writes while paused: Ready=False (reason Paused) and Paused=True.
    obj = pxc(
        cond(Type.READY, "False", Reason.PAUSED, PAUSED_MESSAGE),
        cond(Type.PAUSED, "True", Reason.PAUSED, PAUSED_MESSAGE),
        annotations=PAUSED_ANNOTATION,
    )
    health = evaluate(obj)
    assert health.status == "Suspended"
    assert "proxmox-operator.dev/paused" in health.message
    assert "kubectl annotate proxmoxcluster lab -n infra proxmox-operator.dev/paused-" in health.message


def test_paused_wins_over_a_stale_generation() -> None:
    """While paused the operator does not act on spec changes, so waiting for it would never end."""
    obj = pxc(ready(), cond(Type.PAUSED, "True", Reason.PAUSED), generation=3, observed=1)
    assert evaluate(obj).status == "Suspended"


def test_paused_false_is_not_suspended() -> None:
    obj = pxc(ready(), cond(Type.PAUSED, "False", Reason.RESUMED))
    assert evaluate(obj) == Health("Healthy", READY_MESSAGE)


def test_the_annotation_alone_is_not_suspended_until_the_operator_acknowledges_it() -> None:
    obj = pxc(ready(), annotations=PAUSED_ANNOTATION)
    assert evaluate(obj).status == "Healthy"


def test_paused_without_name_or_namespace_still_says_how_to_resume() -> None:
    obj = pxc(cond(Type.PAUSED, "True", Reason.PAUSED))
    del obj["metadata"]["name"], obj["metadata"]["namespace"]
    health = evaluate(obj)
    assert health.status == "Suspended"
    assert "kubectl annotate proxmoxcluster proxmox-operator.dev/paused-" in health.message


# --- odd input: a status and a message, never a Lua error ---------------------------------------------------


def odd(mutate: Any) -> dict[str, Any]:
    obj = copy.deepcopy(healthy_pxc())
    mutate(obj)
    return obj


@pytest.mark.parametrize(
    ("obj", "status"),
    [
        pytest.param(None, "Unknown", id="no-object"),
        pytest.param({}, "Progressing", id="empty-object"),
        pytest.param(odd(lambda o: o.pop("metadata")), "Unknown", id="no-metadata"),
        pytest.param(odd(lambda o: o.update(metadata="lab")), "Unknown", id="metadata-a-string"),
        pytest.param(odd(lambda o: o["metadata"].pop("generation")), "Unknown", id="no-generation"),
        pytest.param(odd(lambda o: o["metadata"].update(generation="abc")), "Unknown", id="generation-not-numeric"),
        pytest.param(odd(lambda o: o["metadata"].update(generation=[1])), "Unknown", id="generation-a-list"),
        pytest.param(odd(lambda o: o["metadata"].update(generation="1")), "Healthy", id="generation-as-string"),
        pytest.param(odd(lambda o: o["status"].update(observedGeneration="1")), "Healthy", id="observed-as-string"),
        pytest.param(odd(lambda o: o["metadata"].update(generation=1.0)), "Healthy", id="generation-as-float"),
        pytest.param(
            odd(lambda o: o["status"]["conditions"][0].update(observedGeneration="1")),
            "Healthy",
            id="ready-generation-as-string",
        ),
        pytest.param(
            odd(lambda o: o["status"]["conditions"][0].update(observedGeneration="one")),
            "Progressing",
            id="ready-generation-not-numeric",
        ),
        pytest.param(
            odd(lambda o: o["status"].update(observedGeneration={"n": 1})), "Progressing", id="observed-an-object"
        ),
        pytest.param(odd(lambda o: o.update(status="Ready")), "Progressing", id="status-a-string"),
        pytest.param(odd(lambda o: o.update(status=[1, 2])), "Progressing", id="status-a-list"),
        pytest.param(odd(lambda o: o.update(status=7)), "Progressing", id="status-a-number"),
        pytest.param(odd(lambda o: o["status"].update(conditions="Ready")), "Progressing", id="conditions-a-string"),
        pytest.param(odd(lambda o: o["status"].update(conditions=3)), "Progressing", id="conditions-a-number"),
        pytest.param(odd(lambda o: o["status"].update(conditions=True)), "Progressing", id="conditions-a-boolean"),
        pytest.param(
            odd(lambda o: o["status"].update(conditions={"Ready": ready()})), "Progressing", id="conditions-an-object"
        ),
        pytest.param(
            odd(lambda o: o["status"]["conditions"].insert(0, "Ready")), "Healthy", id="condition-entry-a-string"
        ),
        pytest.param(odd(lambda o: o["status"]["conditions"].insert(0, None)), "Healthy", id="condition-entry-null"),
        pytest.param(odd(lambda o: o["status"]["conditions"].insert(0, [])), "Healthy", id="condition-entry-a-list"),
        pytest.param(
            odd(lambda o: o["status"]["conditions"].insert(0, {"status": "False"})), "Healthy", id="condition-no-type"
        ),
        pytest.param(odd(lambda o: o["status"]["conditions"][0].pop("status")), "Unknown", id="ready-without-status"),
        pytest.param(
            odd(lambda o: o["status"]["conditions"][0].update(status="true")), "Unknown", id="ready-status-lowercase"
        ),
        pytest.param(
            odd(lambda o: o["status"]["conditions"][0].update(status=True)), "Unknown", id="ready-status-a-boolean"
        ),
        pytest.param(
            odd(lambda o: o["status"]["conditions"][0].update(status="False", reason=42, message={"a": 1})),
            "Degraded",
            id="reason-and-message-not-strings",
        ),
        pytest.param(
            odd(lambda o: o["status"]["conditions"][0].update(status="False", reason=None, message=None)),
            "Degraded",
            id="reason-and-message-missing",
        ),
        pytest.param(
            odd(lambda o: o["status"]["conditions"][0].update(message=["x"])), "Healthy", id="ready-message-a-list"
        ),
        pytest.param(
            odd(lambda o: o["status"]["conditions"].insert(0, {"type": Type.PAUSED, "status": "True", "reason": 1})),
            "Suspended",
            id="paused-with-odd-fields",
        ),
        pytest.param(
            odd(lambda o: o["metadata"].update(name=["lab"], namespace={"x": 1}, annotations="paused"))
            | {"status": {"conditions": [cond(Type.PAUSED, "True", Reason.PAUSED)]}},
            "Suspended",
            id="paused-name-not-a-string",
        ),
    ],
)
def test_odd_input_gives_a_status_never_an_error(obj: Any, status: str) -> None:
    health = evaluate(obj)
    assert health.status == status
    assert health.message


def test_a_script_error_would_surface_here_not_pass_silently() -> None:
    """The harness itself: a script that indexes nil raises, and a bad return is caught."""
    with pytest.raises(Exception, match="attempt to index"):
        evaluate({}, "local x = nil; return x.y")
    with pytest.raises(AssertionError, match="not a table"):
        evaluate({}, "return 'Healthy'")
    with pytest.raises(AssertionError):
        evaluate({}, "return {status = 'Fine', message = ''}")
    # The sandbox is Argo CD's: no string library, no string methods.
    with pytest.raises(Exception, match="string"):
        evaluate({}, "return {status = string.upper('healthy'), message = ''}")
    with pytest.raises(Exception, match="attempt to index"):
        evaluate({}, "return {status = ('Healthy'):sub(1), message = ''}")


# --- Lua 5.1 (gopher-lua) compatibility ---------------------------------------------------------------------

_LONG_BRACKET = re.compile(r"\[(=*)\[")


def lua_code_only(source: str) -> str:
    """``source`` with comments and string literals blanked out (newlines kept, so line numbers still match)."""
    out: list[str] = []
    i, n = 0, len(source)

    def blank(text: str) -> str:
        return re.sub(r"[^\n]", " ", text)

    while i < n:
        if source.startswith("--", i):
            long = _LONG_BRACKET.match(source, i + 2)
            if long:
                end = source.find("]" + long.group(1) + "]", long.end())
                end = n if end < 0 else end + len(long.group(1)) + 2
            else:
                end = source.find("\n", i)
                end = n if end < 0 else end
            out.append(blank(source[i:end]))
            i = end
        elif source[i] in "\"'":
            quote, j = source[i], i + 1
            while j < n and source[j] != quote and source[j] != "\n":
                j += 2 if source[j] == "\\" else 1
            out.append(quote + blank(source[i + 1 : j]) + quote)
            i = j + 1
        elif _LONG_BRACKET.match(source, i):
            long = _LONG_BRACKET.match(source, i)
            assert long is not None
            end = source.find("]" + long.group(1) + "]", long.end())
            end = n if end < 0 else end + len(long.group(1)) + 2
            out.append(blank(source[i:end]))
            i = end
        else:
            out.append(source[i])
            i += 1
    return "".join(out)


NOT_LUA51 = {
    "integer division //": re.compile(r"//"),
    "bitwise &": re.compile(r"&"),
    "bitwise |": re.compile(r"\|"),
    "bitwise ~ (xor/not)": re.compile(r"~(?!=)"),
    "shift << or >>": re.compile(r"<<|>>"),
    "goto": re.compile(r"\bgoto\b"),
    "label ::name::": re.compile(r"::"),
    "<const>/<close> attribute": re.compile(r"<\s*(const|close)\s*>"),
    # Not opened for scripts from argocd-cm (argo-cd util/lua/lua.go): using them is a runtime error there.
    "standard library not opened by Argo CD": re.compile(r"\b(string|math|io|debug|utf8|coroutine)\s*\."),
    "Lua 5.4/5.1-only unpack": re.compile(r"\b(table\s*\.\s*unpack|unpack)\b"),
    "method call (strings have no methods in Argo CD)": re.compile(r"[\w\)\]\"']\s*:\s*[A-Za-z_]\w*\s*[\(\"'{]"),
}


def lua51_problems(source: str) -> list[str]:
    code = lua_code_only(source)
    problems = []
    for lineno, line in enumerate(code.splitlines(), start=1):
        for what, pattern in NOT_LUA51.items():
            if pattern.search(line):
                problems.append(f"line {lineno}: {what}: {source.splitlines()[lineno - 1].strip()}")
    return problems


def test_health_lua_uses_only_lua51_syntax_and_argocd_available_functions() -> None:
    assert lua51_problems(HEALTH_LUA.read_text()) == []


def test_health_lua_compiles() -> None:
    runtime = lua54.LuaRuntime(unpack_returned_tuples=True)
    compile_error = runtime.eval("function(source) local _, err = load(source, '=health.lua', 't'); return err end")
    assert compile_error(HEALTH_LUA.read_text()) is None
    assert compile_error("return 1 +") is not None


@pytest.mark.parametrize(
    "snippet",
    [
        "local n = a // 2",
        "local n = a & 1",
        "local n = a | 1",
        "local n = a ~ 1",
        "local n = ~a",
        "local n = a << 1",
        "local n = a >> 1",
        "goto done",
        "::done::",
        "local x <const> = 1",
        'local s = string.format("%d", 1)',
        "local f = math.floor(x)",
        "local a, b = unpack(t)",
        "local a, b = table.unpack(t)",
        "local n = s:len()",
        'local n = ("x"):rep(3)',
        'local n = a // 2 -- "a comment after code does not hide code"',
    ],
)
def test_the_lua51_scan_catches_newer_syntax(snippet: str) -> None:
    assert lua51_problems(snippet), snippet


@pytest.mark.parametrize(
    "snippet",
    [
        "if a ~= b then return end",
        'local s = "a // b & c | d ~ e << f goto g :: h"',
        "local s = 'it''s // fine'",
        'local s = "escaped \\" quote // still a string"',
        "-- a comment with // and & and goto",
        "--[[ a long comment\nwith // and goto\n]]",
        "--[==[ long ]] comment // ]==]",
        "local s = [[long // string]]",
        "local s = [=[long ]] // string]=]",
        "local t = {a = 1, b = 2}",
        "local x = t.field .. 'x'",
        "for _, c in ipairs(t) do end",
        "local n = #t",
    ],
)
def test_the_lua51_scan_ignores_strings_comments_and_lua51_operators(snippet: str) -> None:
    assert lua51_problems(snippet) == [], snippet


# --- the documented installation ------------------------------------------------------------------------------


def test_readme_documents_the_exact_argocd_cm_key() -> None:
    readme = README.read_text()
    assert ARGOCD_CM_KEY in readme
    # Argo CD's parser: SplitN(key, ".", 4)[3] is "<group>_<kind>", split once on "_" into group/kind.
    group_kind = ARGOCD_CM_KEY.split(".", 3)[3]
    assert group_kind.split("_") == ["proxmox-operator.dev", "ProxmoxCluster"]
    # A ConfigMap data key: [-._a-zA-Z0-9]+, at most 253 characters.
    assert re.fullmatch(r"[-._a-zA-Z0-9]{1,253}", ARGOCD_CM_KEY)


def test_the_script_reads_only_condition_types_the_operator_writes() -> None:
    """health.lua names condition types as literals (Lua has no access to the enums): each must be a member."""
    named = set(re.findall(r'find_condition\(conditions, "([A-Za-z]+)"\)', HEALTH_LUA.read_text(encoding="utf-8")))
    assert named, "health.lua no longer looks conditions up by type; update this test"
    assert named <= {t.value for t in Type}, f"health.lua reads unknown condition types: {named - set(Type)}"
