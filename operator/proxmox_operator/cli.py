"""``proxmox-operator``: run the operator with its kopf settings.

With no arguments it uses KUBECONFIG (or the in-cluster configuration) and watches all namespaces;
``--namespace`` (repeatable) narrows it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
from collections.abc import Callable

import kopf

from proxmox_operator import handlers, metrics, settings


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
        default=60.0,
        metavar="SECONDS",
        help="seconds between health probes of a Ready cluster (default 60)",
    )
    parser.add_argument(
        "--backoff-base",
        type=_seconds(0.1),
        default=2.0,
        metavar="SECONDS",
        help="first wait before retrying a failing cluster; doubles on each failure (default 2)",
    )
    parser.add_argument(
        "--backoff-max",
        type=_seconds(1),
        default=120.0,
        metavar="SECONDS",
        help="longest wait between retries of a failing cluster (default 120)",
    )
    parser.add_argument(
        "--allow-cross-namespace-secrets",
        action="store_true",
        help="let credentialsRef.namespace name another namespace than the ProxmoxCluster's (default: refused)",
    )
    parser.add_argument(
        "--liveness", metavar="URL", default=None, help="serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz"
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
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    kopf.configure(verbose=args.verbose, quiet=args.quiet, log_format=kopf.LogFormat.FULL)
    tuning = settings.Tuning(
        probe_interval=args.probe_interval,
        backoff_base=args.backoff_base,
        backoff_max=args.backoff_max,
        allow_cross_namespace_secrets=args.allow_cross_namespace_secrets,
    )
    logging.getLogger(__name__).info(
        "proxmox-operator starting (%s); finalizer %s",
        "namespaces " + ", ".join(args.namespace) if args.namespace else "all namespaces",
        handlers.FINALIZER,
    )
    memo = kopf.Memo(tuning=tuning)
    if args.metrics_address is not None:
        memo.metrics = metrics.Metrics()
        try:
            host, port = memo.metrics.serve(args.metrics_address)
        except OSError as exc:
            logging.getLogger(__name__).error("cannot serve metrics on %s: %s", args.metrics_address, exc)  # noqa: TRY400
            return 2
        logging.getLogger(__name__).info("serving Prometheus metrics on http://%s:%d/metrics", host, port)
    asyncio.run(
        kopf.operator(
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            standalone=True,
            liveness_endpoint=args.liveness,
            memo=memo,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
