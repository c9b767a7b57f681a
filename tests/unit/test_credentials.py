"""Turning a Secret's data into Proxmox credentials: exactly one pair, clear errors, secrets never shown."""

import pytest

from proxmox_operator.proxmox.credentials import (
    CredentialsInvalid,
    PasswordCredentials,
    TokenCredentials,
    from_secret_data,
)

CANARY = "canary-s3cr3t-7f1e"


def test_token_pair_gives_token_credentials() -> None:
    creds = from_secret_data({"tokenId": b"root@pam!ci", "tokenSecret": CANARY.encode()})
    assert isinstance(creds, TokenCredentials)
    assert creds.authorization_header() == f"PVEAPIToken=root@pam!ci={CANARY}"


def test_password_pair_gives_password_credentials_and_strips_newline() -> None:
    creds = from_secret_data({"username": b"root@pam\n", "password": CANARY.encode() + b"\n"})
    assert creds == PasswordCredentials(username="root@pam", password=CANARY)


def test_realm_key_is_appended_once_and_never_doubled() -> None:
    assert from_secret_data({"username": b"alice", "password": b"x", "realm": b"pve"}).identity == "alice@pve"
    assert from_secret_data({"username": b"alice@pam", "password": b"x", "realm": b"pve"}).identity == "alice@pam"


def test_username_without_realm_is_rejected_with_advice() -> None:
    with pytest.raises(CredentialsInvalid, match="realm"):
        from_secret_data({"username": b"alice", "password": b"x"})


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({}, "neither"),
        (
            {"tokenId": b"root@pam!ci", "tokenSecret": CANARY.encode(), "username": b"root@pam", "password": b"p"},
            "both",
        ),
        ({"tokenId": b"root@pam!ci"}, "tokenSecret"),
        ({"password": CANARY.encode()}, "username"),
        ({"tokenId": b"root!ci", "tokenSecret": CANARY.encode()}, "USER@REALM!TOKENNAME"),
        ({"tokenId": b"root@pam", "tokenSecret": CANARY.encode()}, "USER@REALM!TOKENNAME"),
        ({"tokenId": b"root@pam!ci", "tokenSecret": b"  "}, "empty"),
        ({"tokenId": b"root@pam!ci", "tokenSecret": b"\xff\xfe"}, "UTF-8"),
    ],
)
def test_invalid_secret_content_names_keys_never_values(data: dict[str, bytes], match: str) -> None:
    with pytest.raises(CredentialsInvalid, match=match) as info:
        from_secret_data(data)
    assert CANARY not in str(info.value)


def test_secrets_stay_out_of_repr_and_fingerprint() -> None:
    token = TokenCredentials(token_id="root@pam!ci", secret=CANARY)
    password = PasswordCredentials(username="root@pam", password=CANARY)
    for creds in (token, password):
        assert CANARY not in repr(creds)
        assert CANARY not in str(creds)
        assert CANARY not in creds.fingerprint()


def test_fingerprint_changes_when_the_secret_rotates() -> None:
    a = TokenCredentials(token_id="root@pam!ci", secret="one")
    b = TokenCredentials(token_id="root@pam!ci", secret="two")
    assert a.fingerprint() != b.fingerprint()
    assert a.fingerprint() == TokenCredentials(token_id="root@pam!ci", secret="one").fingerprint()
