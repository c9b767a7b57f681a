"""kopf registrations, and nothing else: each handler delegates to :mod:`.controller`.

Every handler is ``async``: kopf runs a plain ``def`` handler in a thread pool, and a thread hop per watch event
was 5% of the CPU per registration in ``make bench``. None of them blocks.

Why event handlers only, and no daemon or create/update/delete handlers:

* Every watch event of a ProxmoxCluster goes to the controller's :class:`Supervisor`, which runs one worker per
  resource and keeps the operator's finalizer on it (see :mod:`proxmox_operator.controller.supervisor` for why not
  a kopf daemon per resource: memory, and kopf's handling cycle per daemon). A worker is woken at once by a spec
  change or by a change of the referenced Secret; kopf's retrying change handlers would sleep through such events.
* With no change handlers and no daemons, kopf writes nothing to a user's object: no diff-base or progress
  annotations, and not its own finalizer (kopf's finalizer setting names one nobody uses, so kopf never takes
  ours for its own and removes it). The operator's writes are its finalizer and the status subresource.
* Secrets and ConfigMaps are watched with event handlers that persist nothing (a change handler would copy
  Secret data into an annotation). The Secret watch is label-selected on the server: only Secrets that opted in
  with ``proxmox-operator.dev/credentials: "true"`` reach the operator (see :mod:`.secretstore`); it keeps their
  cache current and wakes the resources that reference them.
* A shard (``--selector``) watches only its ProxmoxClusters: the API server applies the selector to the watch.
  When an object is relabelled out of the shard, the server sends DELETED (with the object as it was), though the
  object lives on: its worker stops, and the object keeps the finalizer, which every shard shares, for the shard
  that takes it over.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from proxmox_operator import events, kube, kubeauth, secretstore, selector
from proxmox_operator.api import v1alpha1 as api
from proxmox_operator.controller.registry import Registry
from proxmox_operator.controller.supervisor import Supervisor
from proxmox_operator.settings import Tuning

log = logging.getLogger(__name__)

PXC = (api.GROUP, api.VERSION, api.PLURAL)
FINALIZER = f"{api.GROUP}/finalizer"
#: kopf's own finalizer setting: a name never put on any object (kopf adds none: no handler here needs one).
KOPF_FINALIZER = f"kopf.{api.GROUP}/unused"


class NoEssence(kopf.DiffBaseStorage):
    """kopf's diff base, for an operator with event handlers only: no essence is built, fetched or stored.

    kopf builds an object's essence (a deep copy of the body without status and most metadata) on every watch
    event of every watched resource, reads the last one back from an annotation and diffs the two. Only change
    handlers (create/update/resume/delete) and daemons or timers use that diff; this operator has none (a test
    keeps it so, see :mod:`tests.unit.test_handlers`). The copying and diffing was about 150 us per watch event,
    three or four events per registration, 3-4% of its CPU in ``make bench``. Every essence is now the same empty
    one, so kopf sees no difference, and nothing is written to the object."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return kopf.BodyEssence()

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


@kopf.on.startup()
async def configure(*, settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    """All kopf settings in one place. Storage names are ours so they never collide with other operators."""
    settings.persistence.finalizer = KOPF_FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=api.GROUP)
    settings.persistence.diffbase_storage = NoEssence()
    # Server-side: no other Secret of the cluster ever streams through the operator.
    settings.watching.label_selectors["", "v1", "secrets"] = secretstore.CREDENTIALS_LABEL_SELECTOR
    # kopf's own Events (an error in a handler) look like the operator's (see :mod:`.events`).
    settings.posting.reporting_component = events.COMPONENT
    settings.posting.reporting_instance = events.this_instance()
    settings.posting.event_name_prefix = events.NAME_PREFIX
    # Explicit watch and request timeouts: a half-dead connection is noticed and replaced.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 10
    # With --metrics-address, the workers and the Proxmox clients report to the metrics (see cli and .metrics).
    metrics = memo.get("metrics")
    memo.registry = Registry(observer=metrics, hooks=metrics.hooks) if metrics is not None else Registry()
    memo.kube = kube.KubeClient(lambda: kubeauth.login(settings=settings))
    if "tuning" not in memo:
        memo.tuning = Tuning()
    if memo.tuning.selector:
        selector.parse(memo.tuning.selector)  # the CLI checked it; a bad one must not reach the watch
        settings.watching.label_selectors[PXC[0], PXC[2]] = memo.tuning.selector
    memo.supervisor = Supervisor(kube=memo.kube, registry=memo.registry, tuning=memo.tuning, finalizer=FINALIZER)


@kopf.on.login()
def login(*, settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
    """The same credentials for kopf's watches and the operator's own requests (see :mod:`.kubeauth`)."""
    return kubeauth.login(settings=settings)


@kopf.on.cleanup()
async def close(*, memo: Any, **_: Any) -> None:
    """Workers first (they stop and deregister), then the pools, then the pending Events and the API client."""
    await memo.supervisor.close()
    await memo.registry.close()
    await memo.kube.close()


@kopf.on.event(*PXC)
async def resource_changed(*, event: Any, memo: Any, **_: Any) -> None:
    """Every watch event of a ProxmoxCluster, for the controller (see :class:`Supervisor`)."""
    memo.supervisor.observe(event.get("type"), event["object"])


def _referenced_configmap(*, namespace: str | None, name: str, memo: Any, **_: Any) -> bool:
    return bool(memo.registry.references("ConfigMap", namespace or "", name))


# No client-side label filter here: a Secret that loses its label arrives as DELETED without it, and must still
# leave the cache. The server-side selector (configure) already restricts the watch to labelled Secrets.
@kopf.on.event("", "v1", "secrets")
async def secret_changed(*, event: Any, body: kopf.Body, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    """A labelled Secret was created, changed, deleted or lost its label: keep the cache true, and re-check the
    resources that reference it now."""
    log.debug("labelled Secret %s/%s: %s", namespace, name, event.get("type") or "listed")
    memo.kube.secrets.observe(event.get("type"), body)
    memo.registry.wake_referencing("Secret", namespace or "", name)


@kopf.on.event("", "v1", "configmaps", when=_referenced_configmap)
async def configmap_changed(*, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    """A referenced ConfigMap (CA bundle) was created, changed or deleted: re-check its users now."""
    memo.registry.wake_referencing("ConfigMap", namespace or "", name)
