"""Exceptions mirroring how PVE reports errors.

* :class:`ApiError` is a ``PVE::Exception`` raised while handling an API call (pve-common
  ``src/PVE/Exception.pm``); the JSON formatter turns it into ``{"data":null,...}`` with the text in
  the reason phrase (and ``"message"`` on newer servers).  :func:`perm_exc` and :func:`param_exc` are
  ``raise_perm_exc``/``raise_param_exc``: ``403 Permission check failed (<what>)`` and
  ``400 Parameter verification failed.`` with per-parameter ``errors``.
* :class:`AuthFailure` is an error of pveproxy's ``auth_handler`` (pve-manager ``PVE/HTTPServer.pm``):
  answered before any handler runs, after the authentication delay, with an empty body (pve-http-server
  ``src/PVE/APIServer/AnyEvent.pm``, ``check_auth``/``response``).
"""

from __future__ import annotations

__all__ = ["ApiError", "AuthFailure", "param_exc", "perm_exc"]


class ApiError(Exception):
    """An API error with HTTP status, message (may end in ``\\n`` like PVE's) and parameter errors."""

    def __init__(self, status: int, message: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors


class AuthFailure(Exception):
    """Authentication failed before the handler ran (401 unless ``status`` says otherwise)."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def perm_exc(what: str | None = None) -> ApiError:
    """``raise_perm_exc``: ``403 Permission check failed (<what>)``."""
    message = "Permission check failed"
    if what:
        message += f" ({what})"
    return ApiError(403, message + "\n")


def param_exc(errors: dict[str, str]) -> ApiError:
    """``raise_param_exc``: ``400 Parameter verification failed.`` with per-parameter errors."""
    return ApiError(400, "Parameter verification failed.\n", errors)
