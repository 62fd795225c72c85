"""perfpulse as operators install it: the wheel (dashboard inside) installed into a fresh
virtual environment and served from there, the container image's Dockerfile read by a
real parser and its install step run against that wheel, the systemd unit checked by
systemd-analyze, the Kubernetes manifests by kubernetes-validate."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import venv
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from exporter import __version__
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
WHEEL = f"perfpulse-{__version__}-py3-none-any.whl"

pytestmark = pytest.mark.e2e


def run(*argv: str | Path, cwd: Path = ROOT, timeout: float = 600, **kw: object) -> str:
    result = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout, **kw
    )  # type: ignore[call-overload]
    assert result.returncode == 0, f"{argv}:\n{result.stdout}\n{result.stderr}"
    return str(result.stdout)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make dist`'s build (python -m build) into a directory of this test's own."""
    assert (ROOT / "exporter/dashboard/index.html").is_file(), "the dashboard is not built"
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--outdir", out, ".")
    return out


def fresh_venv(path: Path) -> Path:
    venv.EnvBuilder(with_pip=True).create(path)
    return path / "bin"


def test_the_wheel_and_sdist_carry_the_dashboard(dist):
    import tarfile
    import zipfile

    names = zipfile.ZipFile(dist / WHEEL).namelist()
    assert "exporter/dashboard/index.html" in names
    assert any(re.fullmatch(r"exporter/dashboard/assets/index-[\w-]+\.js", n) for n in names)
    assert "exporter/spec/panels.json" in names
    assert "exporter/storage/migrations/0002_metrics_snapshots.sql" in names
    with tarfile.open(dist / f"perfpulse-{__version__}.tar.gz") as sdist:
        members = sdist.getnames()
    assert f"perfpulse-{__version__}/exporter/dashboard/index.html" in members


@pytest.fixture(scope="module")
def installed(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel in a fresh virtual environment outside the checkout."""
    bin_dir = fresh_venv(tmp_path_factory.mktemp("venv") / "perfpulse")
    run(
        bin_dir / "pip", "install", "--quiet", "--disable-pip-version-check", dist / WHEEL, cwd=dist
    )
    return bin_dir


@pytest.fixture
def served(installed: Path, tmp_path: Path) -> Iterator[str]:
    """`perfpulse serve` from the installed wheel, in an empty directory, on the embedded
    PostgreSQL: no source tree, no Node.js on its path."""
    port = free_port()
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = {
        "PATH": f"{installed}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PERFPULSE_HOST": "127.0.0.1",
        "PERFPULSE_PORT": str(port),
        "PERFPULSE_DATA_DIR": str(tmp_path / "data"),
        "PERFPULSE_SAMPLING_INTERVAL_SECONDS": "1",
    }
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [installed / "perfpulse", "serve"],
        cwd=workdir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(url + "/healthz", timeout=1).json().get("database") == "ready":
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def test_an_installed_wheel_serves_everything(installed, served, tmp_path):
    assert run(installed / "perfpulse", "--version").strip() == f"perfpulse {__version__}"
    index = httpx.get(served + "/")
    assert index.status_code == 200
    assert '<div id="app">' in index.text  # the dashboard, not the landing page
    script = re.search(r'src="(/assets/[^"]+\.js)"', index.text)
    assert script is not None
    asset = httpx.get(served + script.group(1))
    assert asset.status_code == 200 and "javascript" in asset.headers["content-type"]
    metrics = httpx.get(served + "/metrics").text
    assert 'perfpulse_build_info{python_version="' in metrics
    assert f'version="{__version__}"' in metrics
    password = (tmp_path / "data/initial-admin-password").read_text().strip()
    login = httpx.post(served + "/api/auth/login", json={"username": "admin", "password": password})
    assert login.status_code == 200 and login.json()["token_type"] == "bearer"
    me = httpx.get(
        served + "/api/auth/me", headers={"Authorization": f"Bearer {login.json()['access_token']}"}
    )
    assert me.status_code == 200  # tokens are issued and verified without cryptography
    # HS256 needs no cryptography backend; it would add ~7 MiB to the server when present.
    has_cryptography = run(
        installed / "python",
        "-c",
        "import importlib.util; print(importlib.util.find_spec('cryptography') is not None)",
    ).strip()
    assert has_cryptography == "False", "the wheel's dependencies pull in cryptography again"


# --- the container image ------------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    return DockerfileParser(str(ROOT / "Dockerfile"))


def stages(parser: DockerfileParser) -> list[list[dict[str, str]]]:
    result: list[list[dict[str, str]]] = []
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            result.append([])
        if result:  # comments before the first FROM belong to no stage
            result[-1].append(instruction)
    return result


def test_the_image_builds_the_dashboard_then_the_wheel_then_installs_only_the_wheel(dockerfile):
    built = stages(dockerfile)
    names = [stage[0]["value"].split(" AS ")[-1] for stage in built]
    assert names == ["dashboard", "wheel", "runtime"]
    assert built[0][0]["value"].startswith("node:20")
    assert any(i["value"] == "npm run build" for i in built[0])
    assert any("python -m build --wheel" in i["value"] for i in built[1])
    runtime = built[2]
    copies = [i["value"] for i in runtime if i["instruction"] == "COPY"]
    assert copies == ["--from=wheel /dist/ /tmp/dist/"]  # no source tree in the image
    installs = [
        i["value"] for i in runtime if i["instruction"] == "RUN" and "pip install" in i["value"]
    ]
    assert len(installs) == 1 and "-py3-none-any.whl" in installs[0]
    users = [i["value"] for i in runtime if i["instruction"] == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert dockerfile.labels["org.opencontainers.image.version"] == __version__
    assert any(i["instruction"] == "HEALTHCHECK" and "/healthz" in i["value"] for i in runtime)


def test_the_runtime_stage_install_step_installs_the_built_wheel(dockerfile, dist, tmp_path):
    """The closest to building the image here: the runtime stage's own pip command, run
    in a fresh virtual environment against the wheel the wheel stage makes."""
    runtime = stages(dockerfile)[2]
    install = next(
        i["value"] for i in runtime if i["instruction"] == "RUN" and "pip install" in i["value"]
    )
    command = install.split("&&")[0].strip()
    bin_dir = fresh_venv(tmp_path / "image")
    (tmp_path / "tmp/dist").mkdir(parents=True)
    shutil.copy(dist / WHEEL, tmp_path / "tmp/dist" / WHEEL)
    command = command.replace("/tmp/dist/", f"{tmp_path}/tmp/dist/").replace(
        "pip", f"{bin_dir}/pip", 1
    )
    run("sh", "-c", command, cwd=tmp_path)
    entrypoint = re.search(r'ENTRYPOINT \["(\w+)"\]', (ROOT / "Dockerfile").read_text())
    assert entrypoint is not None
    assert run(bin_dir / entrypoint.group(1), "--version").strip() == f"perfpulse {__version__}"
    assert (
        Path(
            run(bin_dir / "python", "-c", "import exporter, sys; print(exporter.__file__)").strip()
        ).parent
        / "dashboard/index.html"
    ).is_file()


# --- systemd ---------------------------------------------------------------------------------


def test_the_systemd_unit_passes_systemd_analyze(tmp_path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: `make test` installs Debian's systemd"
    unit = (DEPLOY / "systemd/perfpulse.service").read_text()
    assert "ExecStart=/opt/perfpulse/bin/perfpulse serve" in unit
    # verify checks that ExecStart exists: point it at this checkout's perfpulse.
    local = tmp_path / "perfpulse.service"
    local.write_text(
        unit.replace(
            "/opt/perfpulse/bin/perfpulse",
            shutil.which("perfpulse") or str(Path(sys.executable).parent / "perfpulse"),
        )
    )
    result = subprocess.run(
        [analyze, "verify", str(local)], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    security = subprocess.run(
        [analyze, "security", "--offline=true", str(local)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    score = re.search(r"Overall exposure level for perfpulse.service: ([\d.]+)", security.stdout)
    assert score is not None, security.stdout + security.stderr
    assert float(score.group(1)) <= 2.0  # README: 1.8
    for setting in (
        "DynamicUser=yes",
        "StateDirectory=perfpulse",
        "ProtectSystem=strict",
        "AmbientCapabilities=CAP_PERFMON",
        "LimitNOFILE=",
        "NoNewPrivileges=yes",
    ):
        assert setting in unit


def test_systemd_analyze_rejects_a_broken_unit(tmp_path):
    broken = tmp_path / "perfpulse.service"
    broken.write_text("[Service]\nExecStart=relative/path serve\nProtectSystem=sideways\n")
    result = subprocess.run(
        ["systemd-analyze", "verify", str(broken)], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode != 0 or result.stderr


# --- Kubernetes -------------------------------------------------------------------------------


MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))


def test_the_kubernetes_manifests_validate_against_the_schemas():
    validator = Path(sys.executable).parent / "kubernetes-validate"
    result = subprocess.run(
        [validator, "--strict", "--kubernetes-version", "1.31.0", *MANIFESTS],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    passed = re.findall(r"passed for resource (\w+)/perfpulse", result.stdout + result.stderr)
    assert sorted(passed) == ["daemonset", "secret", "service"]


def test_kubernetes_validate_rejects_a_broken_daemonset(tmp_path):
    daemonset = yaml.safe_load((DEPLOY / "kubernetes/daemonset.yaml").read_text())
    daemonset["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    broken = tmp_path / "daemonset.yaml"
    broken.write_text(yaml.safe_dump(daemonset))
    validator = Path(sys.executable).parent / "kubernetes-validate"
    result = subprocess.run([validator, "--strict", broken], capture_output=True, text=True)
    assert result.returncode != 0


def test_the_servicemonitor_scrapes_what_the_service_and_daemonset_expose():
    """No schema ships for the Prometheus Operator's CRD: check the wiring instead."""
    docs = {d["kind"]: d for path in MANIFESTS for d in yaml.safe_load_all(path.read_text())}
    monitor, service, daemonset = docs["ServiceMonitor"], docs["Service"], docs["DaemonSet"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    pod_labels = daemonset["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in service_ports
        assert endpoint["path"] == "/metrics"
    container = daemonset["spec"]["template"]["spec"]["containers"][0]
    port_names = {p["name"] for p in container["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["PERFPULSE_PROC_ROOT"] == "/host/proc"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert daemonset["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_one_version_everywhere():
    assert run(sys.executable, "-m", "exporter", "--version").strip() == f"perfpulse {__version__}"
    assert f"## {__version__} " in (ROOT / "CHANGELOG.md").read_text()
    images = re.findall(r"image: perfpulse:([\w.]+)", (ROOT / "compose.yaml").read_text())
    images += re.findall(
        r"image: perfpulse:([\w.]+)", (DEPLOY / "kubernetes/daemonset.yaml").read_text()
    )
    assert images and set(images) == {__version__}
