"""The privilege model: privileges granted on ``/`` (propagating to every path), per release.

Real PVE evaluates role assignments in an ACL tree (pve-access-control ``src/PVE/RPCEnvironment.pm``,
``permissions``/``compile_acl_path``).  The simulator keeps a small but faithful subset:

* every user and token has a set of privileges on ``/`` that propagates to all paths;
* ``root@pam`` has every privilege (``permissions``: "root can do anything", the Administrator role);
* an API token with privilege separation (the default) gets the intersection of its own ACL and its
  user's privileges; without privilege separation it gets its user's privileges
  (``permissions``: "return user privs for non-privsep tokens").

The privilege names come from ``$privgroups`` in pve-access-control ``src/PVE/AccessControl.pm`` with
the release history from its git log: ``Mapping.*``/``SDN.Use`` added for 8.0, ``Sys.AccessNetwork``
for 8.2, ``VM.GuestAgent.*`` added and ``VM.Monitor`` dropped for 9.0.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pve_simulator.flavour import Flavour

__all__ = [
    "SYS_AUDIT",
    "all_privileges",
    "compute_api_permission",
    "known_privilege",
]

SYS_AUDIT = "Sys.Audit"

_BASE = (
    "Permissions.Modify",
    # VM
    "VM.Config.Disk",
    "VM.Config.CPU",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.HWType",
    "VM.Config.Options",
    "VM.Allocate",
    "VM.Clone",
    "VM.Migrate",
    "VM.Replicate",
    "VM.Snapshot",
    "VM.Snapshot.Rollback",
    "VM.Config.CDROM",
    "VM.Config.Cloudinit",
    "VM.Console",
    "VM.Backup",
    "VM.PowerMgmt",
    "VM.Audit",
    # Sys
    "Sys.PowerMgmt",
    "Sys.Modify",
    "Sys.Incoming",
    "Sys.Console",
    "Sys.Syslog",
    "Sys.Audit",
    # Datastore
    "Datastore.Allocate",
    "Datastore.AllocateTemplate",
    "Datastore.AllocateSpace",
    "Datastore.Audit",
    # SDN
    "SDN.Allocate",
    "SDN.Audit",
    # User
    "Realm.Allocate",
    "User.Modify",
    "Group.Allocate",
    "Realm.AllocateUser",
    # Pool
    "Pool.Allocate",
    "Pool.Audit",
)
_SINCE_8_0 = ("SDN.Use", "Mapping.Modify", "Mapping.Use", "Mapping.Audit")
_SINCE_8_2 = ("Sys.AccessNetwork",)
_SINCE_9_0 = (
    "VM.GuestAgent.Audit",
    "VM.GuestAgent.FileRead",
    "VM.GuestAgent.FileSystemMgmt",
    "VM.GuestAgent.FileWrite",
    "VM.GuestAgent.Unrestricted",
)
_UNTIL_9_0 = ("VM.Monitor",)

_EVERY_PRIVILEGE = frozenset(_BASE + _SINCE_8_0 + _SINCE_8_2 + _SINCE_9_0 + _UNTIL_9_0)


def known_privilege(name: str) -> bool:
    """Whether ``name`` is a privilege of any supported release (for config validation)."""
    return name in _EVERY_PRIVILEGE


def all_privileges(flavour: Flavour) -> frozenset[str]:
    """Every privilege that exists in the given release (the Administrator role)."""
    privs = set(_BASE)
    if flavour.major >= 8:
        privs.update(_SINCE_8_0)
    if (flavour.major, flavour.minor) >= (8, 2):
        privs.update(_SINCE_8_2)
    if flavour.major >= 9:
        privs.update(_SINCE_9_0)
    else:
        privs.update(_UNTIL_9_0)
    return frozenset(privs)


# pve-access-control src/PVE/RPCEnvironment.pm, compute_api_permission: $priv_re_map (anchored at the
# start of the privilege name) and the path each group is evaluated on ($required_paths; the group of a
# path is its first component, 'dc' for '/').
_CAP_GROUPS: tuple[tuple[str, str], ...] = (
    ("vms", r"VM\.|Permissions\.Modify"),
    ("access", r"(User|Group)\.|Permissions\.Modify"),
    ("storage", r"Datastore\.|Permissions\.Modify"),
    ("nodes", r"Sys\.|Permissions\.Modify"),
    ("sdn", r"SDN\.|Permissions\.Modify"),
    ("dc", r"Sys\.Audit|Sys\.Modify|SDN\."),
    ("mapping", r"Mapping\.|Permissions.Modify"),
)


def compute_api_permission(privileges: Iterable[str], flavour: Flavour) -> dict[str, dict[str, int]]:
    """The ``cap`` object of a login response for a user holding ``privileges`` on ``/``.

    Every group key is always present (empty when nothing matches); ``mapping`` only from PVE 8.
    Values are ``1`` as in PVE's JSON.
    """
    privs = sorted(set(privileges))
    cap: dict[str, dict[str, int]] = {}
    for group, pattern in _CAP_GROUPS:
        if group == "mapping" and not flavour.has_mapping:
            continue
        regex = re.compile(f"^({pattern})")
        cap[group] = {priv: 1 for priv in privs if regex.match(priv)}
    return cap
