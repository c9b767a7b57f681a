"""The simulation: everything one simulated cluster consists of, independent of any listener.

A :class:`Simulation` holds the configuration, release flavour, clock, cluster model, accounts,
authentication state (auth key, CSRF secret), faults, counters and the nodes' TLS setup.  Listeners
(:func:`pve_simulator.app.build_api_app`) answer as one of its nodes: one listener for the first node,
or one per node (each on its own loopback address), all sharing this state - what a real cluster
shares through pmxcfs (pve-cluster ``src/PVE/Cluster.pm``): the auth key ``/etc/pve/authkey.key`` and
``pve-www.key`` (so a ticket or CSRF token issued by one node is valid on every node), ``user.cfg``,
the membership and the node certificates.
"""

from __future__ import annotations

import logging

from pve_simulator.access import AccessControl
from pve_simulator.certs import NodeTls
from pve_simulator.clock import Clock, SystemClock
from pve_simulator.config import SimulatorConfig
from pve_simulator.counters import RequestCounters
from pve_simulator.faults import Faults, NodeFaults
from pve_simulator.model import Accounts, Cluster

__all__ = ["LOGGER_NAME", "Simulation"]

LOGGER_NAME = "pve_simulator"


class Simulation:
    """One simulated cluster's state.

    Args:
        config: the validated configuration.
        clock: time source (default: the system clock).
        logger: logger for requests and authentication (default: ``pve_simulator``).

    Attributes:
        config, flavour, clock, cluster, accounts, access, faults, counters, log.
        node_counters: node name -> what that node's listener received.
        tls: node name -> the node's TLS setup (filled in once certificates exist).
    """

    def __init__(
        self, config: SimulatorConfig, *, clock: Clock | None = None, logger: logging.Logger | None = None
    ) -> None:
        self.config = config
        self.flavour = config.flavour
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.log = logger if logger is not None else logging.getLogger(LOGGER_NAME)
        self.cluster = Cluster.from_config(config, self.clock)
        self.accounts = Accounts(config.users, config.tokens, self.flavour)
        self.faults = Faults(self.cluster)
        self.counters = RequestCounters()
        self.node_counters = {node.name: RequestCounters() for node in self.cluster}
        self.tls: dict[str, NodeTls] = {}
        self.access = AccessControl(
            accounts=self.accounts,
            cluster=self.cluster,
            flavour=self.flavour,
            clock=self.clock,
            faults=self.faults,
            logger=self.log,
        )

    def node_faults(self, name: str) -> NodeFaults:
        """The faults of one node (``KeyError`` if unknown)."""
        return self.faults.node(name)

    def certificate_swapped(self, name: str) -> bool:
        """Whether node ``name`` presents its custom certificate (``swap_certificate`` fault)."""
        return self.faults.effective(name).swap_certificate

    def presented_fingerprint(self, name: str) -> str:
        """SHA-256 fingerprint of the certificate node ``name`` presents right now.

        With a custom certificate in place this is also what PVE reports as ``ssl_fingerprint``
        (pve-cluster ``src/PVE/Cluster.pm``, ``get_node_fingerprint``: ``pveproxy-ssl.pem`` if it
        exists, else ``pve-ssl.pem``).
        """
        tls = self.tls.get(name)
        if tls is None:
            return self.cluster.node(name).fingerprint
        return tls.presented().fingerprint
