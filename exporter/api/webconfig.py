"""PERFPULSE_WEB_CONFIG_FILE: exporter-toolkit's web configuration, as node_exporter reads it.

```yaml
tls_server_config:
  cert_file: server.crt      # relative paths are relative to this file
  key_file: server.key
basic_auth_users:
  prometheus: $2y$10$...     # bcrypt hashes (htpasswd -nBC 10 "" | tr -d ':\\n')
```

TLS covers the whole server; basic auth guards /metrics (the API and the live stream
have their own tokens).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from exporter.config import ConfigError

KNOWN_KEYS = {"tls_server_config", "basic_auth_users", "http_server_config"}


@dataclass
class WebConfig:
    cert_file: Path | None = None
    key_file: Path | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    # bcrypt costs ~50 ms a check: remember passwords already verified (their digests).
    _verified: set[bytes] = field(default_factory=set)

    @property
    def tls(self) -> bool:
        return self.cert_file is not None

    def check(self, authorization: str | None) -> bool:
        """True if no users are configured or the Basic credentials match one."""
        if not self.users:
            return True
        if not authorization or not authorization.lower().startswith("basic "):
            return False
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return False
        username, sep, password = decoded.partition(":")
        stored = self.users.get(username)
        if not sep or stored is None:
            return False
        digest = hashlib.sha256(stored + b"\0" + password.encode()).digest()
        if any(hmac.compare_digest(digest, known) for known in self._verified):
            return True
        if bcrypt.checkpw(password.encode(), stored):
            self._verified.add(digest)
            return True
        return False


def load_web_config(path: Path) -> WebConfig:
    """Parse and check the file; every problem is a ConfigError naming the file and key."""
    name = f"PERFPULSE_WEB_CONFIG_FILE ({path})"
    try:
        data: Any = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: expected a mapping at the top")
    unknown = set(data) - KNOWN_KEYS
    if unknown:
        raise ConfigError(f"{name}: unknown keys {', '.join(sorted(unknown))}")
    config = WebConfig()
    tls = data.get("tls_server_config")
    if tls is not None:
        if not isinstance(tls, dict) or not tls.get("cert_file") or not tls.get("key_file"):
            raise ConfigError(f"{name}: tls_server_config needs cert_file and key_file")
        config.cert_file = _relative(path, tls["cert_file"], name)
        config.key_file = _relative(path, tls["key_file"], name)
    users = data.get("basic_auth_users") or {}
    if not isinstance(users, dict):
        raise ConfigError(f"{name}: basic_auth_users must map user names to bcrypt hashes")
    for user, hashed in users.items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise ConfigError(f"{name}: basic_auth_users.{user} is not a bcrypt hash")
        config.users[str(user)] = hashed.encode()
    return config


def _relative(config_path: Path, value: str, name: str) -> Path:
    resolved = (config_path.parent / value).resolve()
    if not resolved.is_file():
        raise ConfigError(f"{name}: {value} does not exist")
    return resolved
