"""``proxmox-operator``: run the operator with its kopf settings.

With no arguments it uses KUBECONFIG (or the in-cluster configuration) and watches all namespaces;
``--namespace`` (repeatable) narrows it, ``--selector`` makes it one shard of several. With ``--leader-elect`` the
replicas of one operator elect a leader over a Lease (:mod:`.leader`) and only the leader runs kopf.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import math
import os
import platform
import secrets
import signal
from collections.abc import Callable

import kopf

from proxmox_operator import handlers, health, kube, kubeauth, leader, metrics, selector, settings

log = logging.getLogger(__name__)
#: The exit status of a leader that could not renew its Lease: it stops at once, and restarts as a standby.
EXIT_LEADERSHIP_LOST = 3


def _seconds(minimum: float) -> Callable[[str], float]:
    """An argparse ``type=``: a finite number of seconds no smaller than ``minimum`` (0 or NaN would hot-loop)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number of seconds, got {text!r}")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g} (seconds), got {text!r}")
        return value

    return parse


def _address(text: str) -> str:
    """An argparse ``type=``: ``HOST:PORT`` (see :func:`metrics.parse_address`)."""
    try:
        metrics.parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="proxmox-operator",
        description="Register Proxmox VE clusters declaratively and keep their status true.",
    )
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="watch only this namespace (repeatable; glob patterns allowed). Default: all namespaces.",
    )
    parser.add_argument(
        "--probe-interval",
        type=_seconds(1),
        default=settings.Tuning.probe_interval,
        metavar="SECONDS",
        help=f"seconds between health probes of a Ready cluster (default {settings.Tuning.probe_interval:g})",
    )
    parser.add_argument(
        "--backoff-base",
        type=_seconds(0.1),
        default=settings.Tuning.backoff_base,
        metavar="SECONDS",
        help="first wait before retrying a failing cluster; doubles on each failure "
        f"(default {settings.Tuning.backoff_base:g})",
    )
    parser.add_argument(
        "--backoff-max",
        type=_seconds(1),
        default=settings.Tuning.backoff_max,
        metavar="SECONDS",
        help=f"longest wait between retries of a failing cluster (default {settings.Tuning.backoff_max:g})",
    )
    parser.add_argument(
        "--allow-cross-namespace-secrets",
        action="store_true",
        help="let credentialsRef.namespace name another namespace than the ProxmoxCluster's (default: refused)",
    )
    parser.add_argument(
        "--selector",
        "-l",
        type=_selector,
        default=settings.Tuning.selector,
        metavar="SELECTOR",
        help="serve only the ProxmoxClusters whose labels match this label selector, e.g. shard=a or '!shard' "
        "(one shard of several; the API server filters the watch). Default: all.",
    )
    parser.add_argument(
        "--liveness",
        metavar="URL",
        default=None,
        help="serve the health endpoint, e.g. http://0.0.0.0:8080/healthz (with --leader-elect it also says "
        "whether this replica is active or standby)",
    )
    election = parser.add_argument_group("leader election (several replicas, one active)")
    election.add_argument(
        "--leader-elect",
        action="store_true",
        help="run kopf only while holding a coordination.k8s.io Lease; other replicas wait as standbys",
    )
    election.add_argument(
        "--leader-election-namespace",
        metavar="NS",
        default=None,
        help="the Lease's namespace. Default: $POD_NAMESPACE, else the ServiceAccount's namespace in a Pod",
    )
    election.add_argument(
        "--leader-election-id",
        metavar="NAME",
        default=settings.Election.lease_name,
        help=f"the Lease's name; every shard needs its own (default {settings.Election.lease_name})",
    )
    parser.add_argument(
        "--metrics-address",
        type=_address,
        default=None,
        metavar="HOST:PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics, e.g. 0.0.0.0:9090 ([::]:9090 for IPv6). "
        "Default: off (the Helm chart turns it on)",
    )
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    args = parser.parse_args(argv)
    if args.backoff_max < args.backoff_base:
        parser.error(
            f"--backoff-max ({args.backoff_max:g}) must not be smaller than --backoff-base ({args.backoff_base:g})"
        )
    if args.leader_elect and not args.leader_election_namespace:
        args.leader_election_namespace = _own_namespace()
        if not args.leader_election_namespace:
            parser.error("--leader-elect needs --leader-election-namespace outside a Pod (or POD_NAMESPACE)")
    return args


def _selector(text: str) -> str:
    """An argparse ``type=``: a label selector the API server will accept ("": all objects)."""
    if not text.strip():
        return ""
    try:
        selector.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text.strip()


def _own_namespace() -> str | None:
    ns_file = kubeauth.SERVICE_ACCOUNT_DIR / "namespace"
    from_file = ns_file.read_text(encoding="utf-8").strip() if ns_file.is_file() else ""
    return os.environ.get("POD_NAMESPACE", "").strip() or from_file or None


def identity() -> str:
    """This replica's name in the Lease: the Pod's name, else the host name and a random suffix."""
    return os.environ.get("POD_NAME", "").strip() or f"{platform.node() or 'proxmox-operator'}-{secrets.token_hex(3)}"


def tune_gc() -> None:
    """Set the cyclic garbage collector up for a long-running operator, once everything is imported.

    What is loaded by now (kopf, aiohttp, pydantic and the models: some 60,000 objects) lives as long as the
    process: frozen, no collection scans it again. And the young generation is collected every
    ``settings.GC_THRESHOLDS[0]`` allocations instead of CPython's 700 (see there for what that measured).
    """
    gc.freeze()
    gc.set_threshold(*settings.GC_THRESHOLDS)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    kopf.configure(verbose=args.verbose, quiet=args.quiet, log_format=kopf.LogFormat.FULL)
    tuning = settings.Tuning(
        probe_interval=args.probe_interval,
        backoff_base=args.backoff_base,
        backoff_max=args.backoff_max,
        allow_cross_namespace_secrets=args.allow_cross_namespace_secrets,
        selector=args.selector,
    )
    log.info(
        "proxmox-operator starting (%s%s); finalizer %s",
        "namespaces " + ", ".join(args.namespace) if args.namespace else "all namespaces",
        f", selector {args.selector}" if args.selector else "",
        handlers.FINALIZER,
    )
    exposed: metrics.Metrics | None = None
    if args.metrics_address is not None:
        # Before the election too: a standby is scraped like the leader (its workers gauge is 0).
        exposed = metrics.Metrics()
        try:
            host, port = exposed.serve(args.metrics_address)
        except OSError as exc:
            log.error("cannot serve metrics on %s: %s", args.metrics_address, exc)  # noqa: TRY400
            return 2
        log.info("serving Prometheus metrics on http://%s:%d/metrics", host, port)
    tune_gc()
    if args.leader_elect:
        return asyncio.run(_elected(args, tuning, exposed))
    asyncio.run(_operator(args, tuning, exposed, liveness=args.liveness))
    return 0


async def _operator(
    args: argparse.Namespace,
    tuning: settings.Tuning,
    exposed: metrics.Metrics | None,
    *,
    liveness: str | None,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
) -> None:
    await kopf.operator(
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        standalone=True,
        liveness_endpoint=liveness,
        stop_flag=stop,
        ready_flag=ready,
        memo=kopf.Memo(tuning=tuning, **({"metrics": exposed} if exposed is not None else {})),
    )


async def _elected(args: argparse.Namespace, tuning: settings.Tuning, exposed: metrics.Metrics | None) -> int:
    """Wait as a standby until this replica holds the Lease, then run kopf while renewing it. A leader that cannot
    renew stops the process at once (it must be gone before a standby may take over); on SIGTERM or SIGINT kopf
    stops and the Lease is released, so a standby takes over within one retry period."""
    client = kube.KubeClient(lambda: kubeauth.login(settings=kopf.OperatorSettings()))
    elector = leader.Elector(client, args.leader_election_namespace, args.leader_election_id, identity())
    log.info("leader election: %s on Lease %s/%s", elector.identity, elector.namespace, elector.name)
    stop, ready = asyncio.Event(), asyncio.Event()
    _on_signals(stop.set)
    runner = await health.serve(args.liveness, lambda: _role(elector)) if args.liveness else None
    try:
        if not await elector.acquire(stop):
            return 0
        # Tasks created before kopf starts are not kopf's: it neither waits for them nor cancels them on exit.
        holding = asyncio.create_task(elector.hold())
        rearming = asyncio.create_task(_rearm(ready, stop))
        running = asyncio.create_task(_operator(args, tuning, exposed, liveness=None, stop=stop, ready=ready))
        await asyncio.wait({holding, running}, return_when=asyncio.FIRST_COMPLETED)
        if holding.done():
            _stop_at_once(f"leader election: lost Lease {elector.namespace}/{elector.name}: {holding.result()}")
        holding.cancel()
        rearming.cancel()
        await elector.release()
        running.result()
        return 0
    finally:
        if runner is not None:
            await runner.cleanup()
        await client.close()


def _on_signals(handler: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, handler)


async def _rearm(ready: asyncio.Event, stop: asyncio.Event) -> None:
    """Once kopf has started (and installed its own signal handlers), route SIGTERM and SIGINT to ``stop`` again:
    kopf stops on it as on a signal, and its waiter for the flag ends with it (a waiter left pending would hold
    kopf's exit, and so the Lease's release, for 5 s). A signal before that already set ``stop``."""
    await ready.wait()
    _on_signals(stop.set)


def _role(elector: leader.Elector) -> dict[str, str]:
    return {
        "role": elector.role,
        "identity": elector.identity,
        "holder": elector.holder,
        "lease": f"{elector.namespace}/{elector.name}",
    }


def _stop_at_once(why: str) -> None:
    """Exit now, without kopf's graceful shutdown: a worker must not write one more status while another replica
    may already lead."""
    log.critical("%s; exiting at once with status %d to restart as a standby", why, EXIT_LEADERSHIP_LOST)
    logging.shutdown()
    os._exit(EXIT_LEADERSHIP_LOST)


if __name__ == "__main__":
    raise SystemExit(main())
