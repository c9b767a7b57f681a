"""The simulation: everything one simulated cluster consists of, independent of any listener.

A :class:`Simulation` holds the configuration, release flavour, clock, cluster model, accounts,
authentication state (auth key, CSRF secret), faults and counters.  Listeners
(:func:`pve_simulator.app.build_api_app`) answer as one of its nodes; the first version runs one
listener for the first node, a later one can run one per node on the same simulation, which is what
a real cluster shares through pmxcfs (pve-cluster ``src/PVE/Cluster.pm``).
"""

from __future__ import annotations

import logging

from pve_simulator.access import AccessControl
from pve_simulator.clock import Clock, SystemClock
from pve_simulator.config import SimulatorConfig
from pve_simulator.counters import RequestCounters
from pve_simulator.faults import Faults
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
        self.access = AccessControl(
            accounts=self.accounts,
            cluster=self.cluster,
            flavour=self.flavour,
            clock=self.clock,
            faults=self.faults,
            logger=self.log,
        )
