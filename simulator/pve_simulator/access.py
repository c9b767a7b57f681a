"""Authentication and authorisation: login, ticket/token verification, CSRF, TFA.

Ported behaviour (facts, not code) from:

* pve-access-control ``src/PVE/API2/AccessControl.pm`` ``create_ticket``: parameters, ``@realm``
  appended to the user name, user-enabled check, renewal with a still-valid ticket as the password
  (``root@pam`` may renew for anyone), the ``path``/``privs`` verification mode, ``NeedTFA`` with a
  ``!tfa!<challenge>`` ticket (signed with the user id as additional data) or, in PVE 7 without
  ``new-format``, a ``tfa!<user>`` ticket, ``cap`` unless TFA is pending, ``clustername`` for users with
  ``Sys.Audit`` on ``/`` in a cluster, and every failure collapsed into ``401 authentication failure``;
* pve-access-control ``src/PVE/AccessControl.pm``: ``verify_ticket``, ``verify_token`` (its error
  texts), ``check_user_enabled``, ``check_token_exist``, ``authenticate_user``,
  ``authenticate_2nd_new``, ``normalize_path``;
* pve-manager ``PVE/HTTPServer.pm`` ``auth_handler``: the calls that need no authentication, API token
  before ticket, ``No ticket``, half-logged-in TFA tickets only for ``POST /access/tfa``, CSRF check on
  every non-GET request made with a ticket, and (from 9.1.5) ``Authentication failed!`` instead of the
  detailed reason;
* pve-http-server ``src/PVE/APIServer/AnyEvent.pm`` ``check_auth``: a ticket cookie (or a
  ``PVEAuthCookie`` in ``Authorization``) wins over an API token, which is only read when no ticket
  was sent.
"""

from __future__ import annotations

import hmac
import logging
import re
from dataclasses import dataclass

from pve_simulator.auth import AuthKeyStore, CsrfSecret, verify_totp
from pve_simulator.clock import Clock
from pve_simulator.config import TOKEN_ID_RE, USER_ID_RE, UserConfig
from pve_simulator.errors import ApiError, AuthFailure
from pve_simulator.faults import Faults
from pve_simulator.flavour import Flavour
from pve_simulator.model import Accounts, Cluster
from pve_simulator.privileges import SYS_AUDIT, compute_api_permission

__all__ = ["NO_AUTH_CALLS", "AccessControl", "AuthInfo", "LoginFailure"]

#: Calls pveproxy lets through without authentication (``auth_handler``).
NO_AUTH_CALLS = frozenset(
    {
        ("GET", "/access/domains"),
        ("GET", "/access/ticket"),
        ("POST", "/access/ticket"),
        ("POST", "/access/vncticket"),
        ("POST", "/access/openid/login"),
        ("POST", "/access/openid/auth-url"),
    }
)

#: Challenge of a user whose only second factor is TOTP (proxmox-tfa ``TfaChallenge``).
TOTP_CHALLENGE = '{"totp":true}'
_OLD_TFA = "\x00old-tfa"  # marker: PVE 7 old-format half login ("tfa!<user>" ticket)
_PATH_RE = re.compile(r"^[A-Za-z0-9.\-_/]+$")


class LoginFailure(Exception):
    """Why an authentication failed.

    ``str(exc)`` is PVE's text (it may echo malformed client input, as PVE's reason phrases do);
    :attr:`log_text` is what the simulator logs, which never repeats such input.
    """

    def __init__(self, message: str, *, log_text: str | None = None) -> None:
        super().__init__(message)
        self.log_text = message if log_text is None else log_text


@dataclass(frozen=True)
class AuthInfo:
    """The outcome of ``auth_handler`` for one request.

    Attributes:
        authid: the authenticated user id or token id (``None`` for calls without authentication).
        api_token: whether an API token header was sent (tokens may not call every method).
        ticket_age: age of the ticket in seconds, when authenticated by ticket.
    """

    authid: str | None
    api_token: bool = False
    ticket_age: int | None = None


@dataclass(frozen=True)
class _Ticket:
    userid: str | None
    age: int
    tfa: str | None  # None: full ticket; otherwise pending TFA


def normalize_path(path: str | None) -> str | None:
    """``PVE::AccessControl::normalize_path``."""
    if not path:
        return None
    path = re.sub(r"/+", "/", path)
    path = path.removesuffix("/") or "/"
    if not path.startswith("/"):
        path = "/" + path
    return path if _PATH_RE.match(path) else None


def split_list(text: str) -> list[str]:
    """``PVE::Tools::split_list``: split on commas, semicolons, whitespace and NULs."""
    return [part for part in re.split(r"[,;\s\0]+", text) if part]


class AccessControl:
    """Authentication state of one cluster: auth key, CSRF secret, accounts.

    Args:
        accounts: users and tokens.
        cluster: the cluster (cluster name and quorum matter for logins and key rotation).
        flavour: the PVE release behaviour.
        clock: time source for tickets, tokens, TOTP and expiry.
        faults: injected faults (``refuse_logins``).
        logger: where authentication outcomes are logged (ids only, never secrets).
    """

    def __init__(
        self,
        *,
        accounts: Accounts,
        cluster: Cluster,
        flavour: Flavour,
        clock: Clock,
        faults: Faults,
        logger: logging.Logger,
    ) -> None:
        self.accounts = accounts
        self.cluster = cluster
        self.flavour = flavour
        self.clock = clock
        self.faults = faults
        self.log = logger
        self.keys = AuthKeyStore(clock)
        self.csrf = CsrfSecret(clock)

    # -- accounts -------------------------------------------------------------------------------

    def _check_user_enabled(self, userid: str) -> UserConfig:
        if not USER_ID_RE.match(userid) or len(userid) >= 64:
            raise LoginFailure(f"value '{userid}' does not look like a valid user name")
        user = self.accounts.users.get(userid)
        if user is None:
            raise LoginFailure(f"no such user ('{userid}')")
        if not user.enabled:
            raise LoginFailure(f"user '{userid}' is disabled")
        if user.expire and user.expire < self.clock.time():
            raise LoginFailure(f"user '{userid}' access expired")
        return user

    # -- tickets --------------------------------------------------------------------------------

    def assemble_ticket(self, userid: str) -> str:
        """A full ticket for ``userid`` signed now (as a successful login would issue)."""
        return self.keys.assemble("PVE", userid, quorate=self.cluster.quorate)

    def _verify_ticket(self, ticket: str | None) -> _Ticket | None:
        verified = self.keys.verify("PVE", ticket, quorate=self.cluster.quorate)
        if verified is None or verified.data is None:
            return None
        data = verified.data
        if data.startswith("!tfa!"):
            # new-style half-login ticket: carries no user name, never a valid login
            return _Ticket(userid=None, age=verified.age, tfa=data[5:])
        if data.startswith("tfa!"):
            return _Ticket(userid=data[4:], age=verified.age, tfa=_OLD_TFA)
        if not USER_ID_RE.match(data):
            return None
        return _Ticket(userid=data, age=verified.age, tfa=None)

    # -- tokens ---------------------------------------------------------------------------------

    def verify_token(self, api_token: str) -> str:
        """``PVE::AccessControl::verify_token``: return the token id or raise :class:`LoginFailure`."""
        if not api_token:
            raise LoginFailure("no API token specified")
        tokenid, sep, value = api_token.rpartition("=")
        if not sep:
            raise LoginFailure("no tokenid specified")
        match = TOKEN_ID_RE.match(tokenid)
        if match is None:
            raise LoginFailure(
                f"'{tokenid}' is not a valid token ID - not able to split into user and token parts",
                log_text="malformed API token ID (not USER@REALM!TOKENID)",
            )
        userid, name = match.group(1), match.group(4)
        self._check_user_enabled(userid)
        token = self.accounts.tokens.get(tokenid)
        if token is None:
            raise LoginFailure(f"no such token '{name}' for user '{userid}'")
        if token.expire and token.expire < self.clock.time():
            raise LoginFailure(f"token '{name}' access expired")
        if not hmac.compare_digest(token.secret.get_secret_value().encode(), value.encode()):
            raise LoginFailure("invalid token value!")
        return tokenid

    # -- pveproxy auth_handler ------------------------------------------------------------------

    def _verify_session_ticket(self, ticket: str) -> _Ticket:
        verified = self._verify_ticket(ticket)
        if verified is None or verified.userid is None:
            raise LoginFailure("permission denied - invalid PVE ticket")
        self._check_user_enabled(verified.userid)
        return verified

    def _auth_error(self, exc: LoginFailure) -> AuthFailure:
        self.log.warning("authentication failure: %s", exc.log_text)
        return AuthFailure(str(exc) if self.flavour.detailed_auth_errors else "Authentication failed!")

    def auth_handler(
        self, method: str, rel_uri: str, ticket: str | None, csrf_token: str | None, api_token: str | None
    ) -> AuthInfo:
        """Authenticate one API request; raise :class:`AuthFailure` (401) when it is not allowed."""
        if (method, rel_uri) in NO_AUTH_CALLS:
            return AuthInfo(authid=None, api_token=bool(api_token))
        if api_token:
            try:
                tokenid = self.verify_token(api_token)
            except LoginFailure as exc:
                raise self._auth_error(exc) from None
            return AuthInfo(authid=tokenid, api_token=True)
        if not ticket:
            raise AuthFailure("No ticket")
        try:
            verified = self._verify_session_ticket(ticket)
        except LoginFailure as exc:
            raise self._auth_error(exc) from None
        assert verified.userid is not None
        if verified.tfa is not None and (rel_uri, method) != ("/access/tfa", "POST"):
            raise AuthFailure("No ticket")
        if method != "GET" and not self.csrf.verify(verified.userid, csrf_token):
            raise AuthFailure("Permission denied - invalid csrf token")
        return AuthInfo(authid=verified.userid, ticket_age=verified.age)

    # -- login ----------------------------------------------------------------------------------

    def create_ticket(
        self, params: dict[str, object], client_ip: str, *, refuse: bool = False, cluster_name: str | None = None
    ) -> dict[str, object]:
        """``POST /access/ticket`` with validated parameters; raise ``401 authentication failure``.

        ``refuse``: fail like a wrong password (the answering node's ``refuse_logins`` fault).
        ``cluster_name``: the ``clustername`` to report instead of the configured one (a virtual cluster's).
        """
        username = str(params["username"])
        if params.get("realm"):
            username += f"@{params['realm']}"
        try:
            result = self._login(username, params, refuse=refuse)
        except LoginFailure as exc:
            self.log.warning("authentication failure; rhost=%s user=%s msg=%s", client_ip, username, exc.log_text)
            raise ApiError(401, "authentication failure\n") from None
        username = str(result["username"])
        if "NeedTFA" not in result:
            result["cap"] = compute_api_permission(self.accounts.privileges(username), self.flavour)
        name = cluster_name if cluster_name is not None else self.cluster.name
        if name is not None and self.accounts.check(username, [SYS_AUDIT]):
            result["clustername"] = name
        self.log.info("successful auth for user '%s'", username)
        return result

    def _login(self, username: str, params: dict[str, object], *, refuse: bool) -> dict[str, object]:
        if refuse or self.faults.refuse_logins:
            raise LoginFailure("login refused by fault injection")
        self._check_user_enabled(username)
        if params.get("path") and params.get("privs"):
            return self._verify_auth(username, params)
        return self._create_ticket_do(username, params)

    def _new_format(self, params: dict[str, object]) -> bool:
        if self.flavour.login_new_format_ignored:
            return True
        value = params.get("new-format")
        return self.flavour.login_new_format_default if value is None else bool(value)

    def _create_ticket_do(self, username: str, params: dict[str, object]) -> dict[str, object]:
        password = str(params["password"])
        otp = None if params.get("otp") is None else str(params["otp"])
        challenge = None if params.get("tfa-challenge") is None else str(params["tfa-challenge"])
        if otp is not None and challenge is not None:
            raise LoginFailure("TFA response should be in 'password', not 'otp' when 'tfa-challenge' is set")
        renewal = None if challenge is not None else self._verify_ticket(password)
        tfa: str | None
        if renewal is not None and renewal.userid is not None and renewal.userid in ("root@pam", username):
            if renewal.tfa is not None:
                raise LoginFailure("incomplete ticket")
            tfa = None  # valid ticket: renewal (root@pam can create tickets for other users)
        else:
            tfa = self._authenticate_user(username, password, otp, challenge, self._new_format(params))
        result: dict[str, object] = {"username": username}
        data, aad = username, None
        if tfa is not None:
            result["NeedTFA"] = 1
            if tfa == _OLD_TFA:
                data = f"tfa!{username}"
            else:
                data, aad = f"!tfa!{tfa}", username
        result["ticket"] = self.keys.assemble("PVE", data, aad, quorate=self.cluster.quorate)
        result["CSRFPreventionToken"] = self.csrf.assemble(username)
        return result

    def _verify_auth(self, username: str, params: dict[str, object]) -> dict[str, object]:
        path, privs = str(params["path"]), str(params["privs"])
        normpath = normalize_path(path)
        if normpath is None:
            raise LoginFailure(f"invalid path - {path}")
        password = str(params["password"])
        verified = self._verify_ticket(password)
        if verified is None or verified.tfa is not None or verified.userid != username:
            otp = None if params.get("otp") is None else str(params["otp"])
            self._authenticate_user(username, password, otp, None, True, second_factor=False)
        privlist = split_list(privs)
        if not privlist or not self.accounts.check(username, privlist):
            raise LoginFailure(f"no permission ({path}, {privs})")
        return {"username": username}

    def _authenticate_user(
        self,
        username: str,
        password: str,
        otp: str | None,
        challenge: str | None,
        new_format: bool,
        *,
        second_factor: bool = True,
    ) -> str | None:
        """First factor (and TFA); returns the pending TFA challenge or ``None`` when fully logged in."""
        user = self._check_user_enabled(username)
        realm = username.rsplit("@", 1)[1]
        if realm not in self.accounts.realms:
            raise LoginFailure(f"auth domain '{realm}' does not exist")
        if challenge is not None:
            self._complete_tfa(user, password, challenge)
            return None
        if not hmac.compare_digest(user.password.get_secret_value().encode(), password.encode()):
            raise LoginFailure("invalid credentials")
        if not second_factor or not user.has_tfa:
            return None
        if otp is not None:
            self._check_totp(user, otp, prefixed=new_format)
            return None
        return TOTP_CHALLENGE if new_format else _OLD_TFA

    def _complete_tfa(self, user: UserConfig, response: str, challenge: str) -> None:
        verified = self.keys.verify("PVE", challenge, user.userid, quorate=self.cluster.quorate)
        if verified is None or verified.data is None or not verified.data.startswith("!tfa!"):
            raise LoginFailure("bad ticket")
        self._check_totp(user, response, prefixed=True)

    def _check_totp(self, user: UserConfig, response: str, *, prefixed: bool) -> None:
        code = response
        if prefixed:
            kind, sep, code = response.partition(":")
            if not sep or kind != "totp":
                raise LoginFailure("failed 2nd factor")
        secret = user.totp_secret
        if secret is None or not verify_totp(secret.get_secret_value(), code, self.clock.time()):
            raise LoginFailure("failed 2nd factor")
