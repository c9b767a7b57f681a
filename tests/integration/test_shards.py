"""Label-selector shards on the real API server: operators started with disjoint ``--selector``s never both serve
one ProxmoxCluster, a relabelled object moves from one shard to the other (finalizer and all), and an object that
matches no shard is served by none until a catch-all shard (``!shard``) is running.

The shards work on a pxo-life-* namespace of their own; each object talks to a simulated cluster of its own (two
objects on one cluster would rightly be flagged as duplicates).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import OPERATOR_ARGS, OperatorProcess, apply, pxc_manifest, token_secret
from tests.integration.kube import Cluster, event_reasons, get_pxc, wait_condition, wait_for
from tests.integration.pve import PVE

pytestmark = pytest.mark.integration


@pytest.fixture
def shards(
    cluster: Cluster, operator_kubeconfig: Path, life_namespace: str, tmp_path: Path
) -> Iterator[Callable[[str, str], OperatorProcess]]:
    started: list[OperatorProcess] = []

    def start(name: str, selector: str) -> OperatorProcess:
        op = OperatorProcess(
            operator_kubeconfig,
            tmp_path / f"shard-{name}.log",
            [*OPERATOR_ARGS, "--namespace", life_namespace, "--selector", selector],
        )
        op.start()
        started.append(op)
        return op

    yield start
    # Every object left must be released by the shard that serves it: relabel the rest to one that runs.
    cluster.kubectl("label", "pxc", "--all", "-n", life_namespace, "shard=b", "--overwrite", check=False)
    cluster.kubectl("delete", "pxc", "--all", "-n", life_namespace, "--wait=true", "--timeout=40s", check=False)
    for op in started:
        op.stop()


@pytest.fixture
def clusters(pve_cert_dir: Path) -> Iterator[list[PVE]]:
    sims = [PVE(cert_dir=pve_cert_dir).start() for _ in range(3)]
    yield sims
    for sim in sims:
        sim.stop()


def labelled(name: str, namespace: str, pve: PVE, shard: str | None) -> dict[str, object]:
    manifest = pxc_manifest(
        name,
        namespace,
        endpoint=pve.url,
        secret="token",
        ca_pem=pve.ca_pem,
        extra={"healthCheck": {"intervalSeconds": 10}},
    )
    if shard is not None:
        manifest["metadata"]["labels"] = {"shard": shard}
    return manifest


def serves(op: OperatorProcess, namespace: str, name: str, since: int = 0) -> bool:
    """Whether the operator's log (from line ``since`` on) shows it working on the object: a line of its worker
    or a status write (the worker logs each at debug level, and test operators run with --verbose)."""
    text = "\n".join(op.log().splitlines()[since:])
    return f"{namespace}/{name}: " in text


def test_two_shards_never_both_serve_an_object_and_a_relabelled_object_moves(
    cluster: Cluster, shards: Callable[[str, str], OperatorProcess], life_namespace: str, clusters: list[PVE]
) -> None:
    ns = life_namespace
    pve_a, pve_b, pve_c = clusters
    a = shards("a", "shard=a")
    b = shards("b", "shard=b")
    secrets = [token_secret(ns, pve, name=f"token-{i}") for i, pve in enumerate(clusters)]
    objects = [labelled("lab-a", ns, pve_a, "a"), labelled("lab-b", ns, pve_b, "b"), labelled("lab-c", ns, pve_c, None)]
    for obj, i in zip(objects, range(3), strict=True):
        obj["spec"]["credentialsRef"]["name"] = f"token-{i}"  # type: ignore[index]
    apply(cluster, *secrets, *objects)
    wait_condition(cluster, ns, "lab-a", "True", "Registered")
    wait_condition(cluster, ns, "lab-b", "True", "Registered")
    assert serves(a, ns, "lab-a") and not serves(a, ns, "lab-b")
    assert serves(b, ns, "lab-b") and not serves(b, ns, "lab-a")
    # The unlabelled object matches neither shard: nobody adds a finalizer, probes it or writes its status.
    unserved = get_pxc(cluster, ns, "lab-c")
    assert unserved is not None and "status" not in unserved and not unserved["metadata"].get("finalizers")
    assert pve_c.probes() == 0
    assert not serves(a, ns, "lab-c") and not serves(b, ns, "lab-c")

    # Relabel lab-a to shard b: a stops its worker, b takes it over and keeps its status true.
    a_lines = len(a.log().splitlines())
    cluster.kubectl("label", "pxc", "lab-a", "-n", ns, "shard=b", "--overwrite")
    moved = labelled("lab-a", ns, pve_a, "b")
    moved["spec"]["credentialsRef"]["name"] = "token-0"  # type: ignore[index]
    moved["spec"]["healthCheck"] = {"intervalSeconds": 11}  # type: ignore[index]
    apply(cluster, moved)
    wait_for(
        lambda: (o := get_pxc(cluster, ns, "lab-a")) and o["status"].get("observedGeneration") == 2,
        timeout=30,
        what="shard b to observe lab-a's new generation",
    )
    assert serves(b, ns, "lab-a")
    # Shard a stopped its worker at the relabel, and wrote nothing for lab-a after that.
    stopped_at = next(
        i for i, line in enumerate(a.log().splitlines()) if "lab-a: no longer matches this operator's selector" in line
    )
    assert stopped_at >= a_lines
    assert not serves(a, ns, "lab-a", since=stopped_at + 1)
    assert event_reasons(cluster, ns).count("Registered") == 2  # lab-a and lab-b once each, never again
    assert "Deregistered" not in event_reasons(cluster, ns)  # a moved object was not deregistered
    # Shard b releases the finalizer shard a had added.
    cluster.kubectl("delete", "pxc", "lab-a", "-n", ns, "--wait=true", "--timeout=30s")

    # A catch-all shard serves the objects without the label.
    rest = shards("rest", "!shard")
    wait_condition(cluster, ns, "lab-c", "True", "Registered")
    assert serves(rest, ns, "lab-c") and not serves(rest, ns, "lab-b")
