"""A Proxmox VE API simulator: the parts of the PVE HTTPS API the operator uses, behaving as PVE does.

Real TLS (a cluster CA and node certificates generated like pve-cluster does), real tickets, CSRF
tokens and API tokens (as pve-access-control checks them), pveproxy's error and header conventions
(pve-http-server), per-release differences for PVE 7, 8 and 9, one HTTPS listener per node (each on
its own 127.x address, same port), cluster-wide and per-node fault injection (latency, connection
resets, hangs, forced statuses with Retry-After, refused logins, swapped certificates) and request
counters (per node too, with concurrency and rate observations) for tests.  See
:class:`SimulatorServer` for the Python API, :mod:`pve_simulator.control` for the control listener and
:mod:`pve_simulator.cli` for the command line.
"""

from pve_simulator.auth import totp_code
from pve_simulator.certs import client_ssl_context, fingerprint
from pve_simulator.clock import Clock, ManualClock, SystemClock
from pve_simulator.config import NodeConfig, SimulatorConfig, TokenConfig, UserConfig
from pve_simulator.counters import RequestCounters
from pve_simulator.faults import Faults, NodeFaults
from pve_simulator.flavour import Flavour, parse_flavour
from pve_simulator.server import SimulatorServer, SimulatorThread

__all__ = [
    "Clock",
    "Faults",
    "Flavour",
    "ManualClock",
    "NodeConfig",
    "NodeFaults",
    "RequestCounters",
    "SimulatorConfig",
    "SimulatorServer",
    "SimulatorThread",
    "SystemClock",
    "TokenConfig",
    "UserConfig",
    "client_ssl_context",
    "fingerprint",
    "parse_flavour",
    "totp_code",
]
