"""Proxmox credentials: an API token or a username/password pair.

The secret parts never appear in ``repr``/``str`` (they would end up in logs and tracebacks); code that needs
them reads the attribute explicitly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

# https://pve.proxmox.com/wiki/User_Management: user ids are USER@REALM, token ids USER@REALM!TOKENID.
_TOKEN_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class CredentialsInvalid(ValueError):
    """The Secret's content cannot be turned into credentials. The message names keys, never values."""


@dataclass(frozen=True)
class TokenCredentials:
    """An API token: ``Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET``, no ticket and no CSRF token."""

    token_id: str
    secret: str = field(repr=False)

    @property
    def identity(self) -> str:
        return self.token_id

    @property
    def method(self) -> str:
        return "token"

    def authorization_header(self) -> str:
        return f"PVEAPIToken={self.token_id}={self.secret}"

    def fingerprint(self) -> str:
        """A stable digest to notice changed credentials without keeping or comparing the secret in clear."""
        return hashlib.sha256(f"token\0{self.token_id}\0{self.secret}".encode()).hexdigest()


@dataclass(frozen=True)
class PasswordCredentials:
    """A username (``USER@REALM``) and password, exchanged for a ticket at ``POST /access/ticket``."""

    username: str
    password: str = field(repr=False)

    @property
    def identity(self) -> str:
        return self.username

    @property
    def method(self) -> str:
        return "password"

    def fingerprint(self) -> str:
        return hashlib.sha256(f"password\0{self.username}\0{self.password}".encode()).hexdigest()


Credentials = TokenCredentials | PasswordCredentials


def _text(data: dict[str, bytes], key: str) -> str | None:
    raw = data.get(key)
    if raw is None:
        return None
    try:
        value = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CredentialsInvalid(f"key '{key}' is not valid UTF-8") from None
    # `echo secret | base64` and `kubectl create secret --from-file` leave a trailing newline: drop it.
    value = value.strip()
    if not value:
        raise CredentialsInvalid(f"key '{key}' is empty")
    return value


def from_secret_data(data: dict[str, bytes]) -> Credentials:
    """Build credentials from a Secret's decoded data.

    Exactly one pair: ``tokenId`` + ``tokenSecret``, or ``username`` + ``password`` (with an optional ``realm``
    appended to a username that has none; a username that already carries ``@realm`` is never doubled).
    """
    token_id, token_secret = _text(data, "tokenId"), _text(data, "tokenSecret")
    username, password = _text(data, "username"), _text(data, "password")
    has_token = token_id is not None or token_secret is not None
    has_password = username is not None or password is not None
    if has_token and has_password:
        raise CredentialsInvalid(
            "the Secret holds both an API token (tokenId/tokenSecret) and a password login (username/password); "
            "keep exactly one pair"
        )
    if has_token:
        if token_id is None or token_secret is None:
            missing = "tokenId" if token_id is None else "tokenSecret"
            raise CredentialsInvalid(f"key '{missing}' is missing: an API token needs tokenId and tokenSecret")
        user, sep, name = token_id.partition("!")
        if not sep or "@" not in user or not name or not set(name) <= _TOKEN_ID_CHARS:
            raise CredentialsInvalid("key 'tokenId' must look like USER@REALM!TOKENNAME, e.g. root@pam!operator")
        return TokenCredentials(token_id=token_id, secret=token_secret)
    if has_password:
        if username is None or password is None:
            missing = "username" if username is None else "password"
            raise CredentialsInvalid(f"key '{missing}' is missing: a password login needs username and password")
        realm = _text(data, "realm")
        if "@" not in username:
            if realm is None:
                raise CredentialsInvalid(
                    "key 'username' needs a realm, e.g. root@pam, or add a 'realm' key (pam, pve, ...)"
                )
            username = f"{username}@{realm}"
        return PasswordCredentials(username=username, password=password)
    raise CredentialsInvalid("the Secret has neither tokenId/tokenSecret nor username/password; add exactly one pair")
