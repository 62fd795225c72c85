"""/metrics behind exporter-toolkit's web config: TLS and basic auth, checked by promtool."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from exporter.api.webconfig import load_web_config
from exporter.config import ConfigError
from tests.servers import serve

EXAMPLE = Path(__file__).parent.parent / "prometheus" / "web-config.example.yml"


def self_signed(directory: Path) -> Path:
    """perfpulse.crt and perfpulse.key for 127.0.0.1, next to a copy of the example."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "perfpulse-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    (directory / "perfpulse.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "perfpulse.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    config = directory / "web-config.yml"
    shutil.copy(EXAMPLE, config)
    return config


def test_promtool_accepts_the_example_web_config(tmp_path):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test` installs Debian's prometheus package"
    config = self_signed(tmp_path)
    result = subprocess.run(
        [promtool, "check", "web-config", str(config)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_bad_web_configs_are_refused_with_the_reason(tmp_path):
    path = tmp_path / "web.yml"
    path.write_text("basic_auth_users:\n  prometheus: plaintext\n")
    with pytest.raises(ConfigError, match=r"basic_auth_users\.prometheus is not a bcrypt hash"):
        load_web_config(path)
    path.write_text("tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n")
    with pytest.raises(ConfigError, match=r"missing\.crt does not exist"):
        load_web_config(path)
    path.write_text("tls_config: {}\n")
    with pytest.raises(ConfigError, match="unknown keys tls_config"):
        load_web_config(path)


@pytest.mark.e2e
def test_protected_metrics_over_tls(tmp_path, server_env):
    config = self_signed(tmp_path)
    env = {**server_env, "PERFPULSE_WEB_CONFIG_FILE": str(config)}
    context = ssl.create_default_context(cafile=str(tmp_path / "perfpulse.crt"))
    with serve(tmp_path, "--interval", "0.3", env=env, scheme="https", verify=context) as server:
        assert server.url.startswith("https://")
        with httpx.Client(verify=context) as client:
            anonymous = client.get(server.url + "/metrics")
            wrong = client.get(server.url + "/metrics", auth=("prometheus", "guess"))
            right = client.get(server.url + "/metrics", auth=("prometheus", "change-me"))
            health = client.get(server.url + "/healthz")
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.url + "/metrics")  # an unknown certificate is refused
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == 'Basic realm="perfpulse"'
    assert wrong.status_code == 401
    assert right.status_code == 200
    assert "perfpulse_collector_success" in right.text
    assert health.status_code == 200  # only /metrics asks for scrape credentials
