"""Passwords and tokens: argon2id, and JWT verification that refuses every forgery."""

from __future__ import annotations

import base64
import json
import os
import stat
from datetime import UTC, datetime, timedelta

import pytest
from argon2 import PasswordHasher
from jose import jwt

from exporter.auth.passwords import hash_password, verify_password
from exporter.auth.tokens import TokenError, decode_token, issue_token, load_jwt_secret
from exporter.config import ConfigError, load_settings

SECRET = b"k" * 32


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_password_hash_is_argon2id_and_verifies():
    hashed = await hash_password("correct horse")
    assert hashed.startswith("$argon2id$")
    assert await verify_password(hashed, "correct horse")
    assert not await verify_password(hashed, "wrong horse")
    assert not await verify_password("not a hash", "correct horse")


def test_issued_token_round_trips():
    now = datetime.now(UTC)
    issued = issue_token(SECRET, "alice", timedelta(minutes=60), now)
    assert issued.expires_in == 3600
    claims = decode_token(SECRET, issued.token)
    assert claims.subject == "alice"
    assert claims.expires_at - claims.issued_at == timedelta(minutes=60)


def test_expired_token_is_refused():
    issued = issue_token(
        SECRET, "alice", timedelta(minutes=1), datetime.now(UTC) - timedelta(hours=1)
    )
    with pytest.raises(TokenError, match="token expired"):
        decode_token(SECRET, issued.token)


def test_tampered_signature_is_refused():
    token = issue_token(SECRET, "alice", timedelta(minutes=5)).token
    header, payload, signature = token.split(".")
    forged_payload = _b64({"sub": "admin", **json.loads(base64.urlsafe_b64decode(payload + "=="))})
    with pytest.raises(TokenError, match="invalid token"):
        decode_token(SECRET, f"{header}.{forged_payload}.{signature}")


def test_alg_none_is_refused():
    now = int(datetime.now(UTC).timestamp())
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64({'sub': 'alice', 'iat': now, 'exp': now + 600})}."
    with pytest.raises(TokenError):
        decode_token(SECRET, unsigned)


def test_token_signed_with_another_key_is_refused():
    other = issue_token(b"o" * 32, "alice", timedelta(minutes=5)).token
    with pytest.raises(TokenError, match="invalid token"):
        decode_token(SECRET, other)


def test_other_algorithm_with_the_same_key_is_refused():
    now = datetime.now(UTC)
    token = jwt.encode(
        {"sub": "alice", "iat": now, "exp": now + timedelta(minutes=5)}, SECRET, algorithm="HS512"
    )
    with pytest.raises(TokenError, match="invalid token"):
        decode_token(SECRET, token)


@pytest.mark.parametrize("missing", ["exp", "iat", "sub"])
def test_each_required_claim_must_be_present(missing):
    now = datetime.now(UTC)
    claims = {"sub": "alice", "iat": now, "exp": now + timedelta(minutes=5)}
    del claims[missing]
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    with pytest.raises(TokenError, match="invalid token"):
        decode_token(SECRET, token)


def test_oversized_token_is_refused_before_decoding():
    with pytest.raises(TokenError, match="too large"):
        decode_token(SECRET, "a" * 5000)


def test_argon2_defaults_are_argon2id():
    assert PasswordHasher().type.name == "ID"


def test_secret_is_generated_once_with_mode_0600(tmp_path):
    settings = load_settings(data_dir=tmp_path)
    first = load_jwt_secret(settings)
    assert len(first) >= 32
    assert load_jwt_secret(settings) == first
    assert stat.S_IMODE(os.stat(tmp_path / "jwt-secret").st_mode) == 0o600


def test_short_secret_is_refused_at_start(monkeypatch):
    monkeypatch.setenv("PERFPULSE_JWT_SECRET", "short")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "PERFPULSE_JWT_SECRET" in str(caught.value)
    assert "short" not in str(caught.value)  # a secret is never echoed


def test_short_secret_file_is_refused(tmp_path):
    (tmp_path / "jwt-secret").write_text("tiny")
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        load_jwt_secret(load_settings(data_dir=tmp_path))
