"""The cgroups collector: names and kinds, the parsers, the three layouts on fixture trees
with exact arithmetic, and real cgroups made on this machine's kernel."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from exporter.collectors.base import Unavailable
from exporter.collectors.cgroups import (
    CgroupsCollector,
    classify,
    find_layout,
    parse_blkio_bytes,
    parse_io_stat,
    parse_memory_max,
    parse_pressure_some,
)
from tests.conftest import FakeClock, ProcTree

ID = "4f2a9c1be0d34a0f8b8e0a1c2d3e4f5061728394a5b6c7d8e9f0a1b2c3d4e5f6"


@pytest.mark.parametrize(
    ("path", "kind", "name"),
    [
        ("system.slice/nginx.service", "service", "nginx.service"),
        ("system.slice", "slice", "system.slice"),
        ("user.slice/user-1000.slice/session-3.scope", "scope", "session-3.scope"),
        (f"system.slice/docker-{ID}.scope", "container", ID[:12]),
        (
            f"kubepods.slice/kubepods-besteffort.slice/cri-containerd-{ID}.scope",
            "container",
            ID[:12],
        ),
        (f"machine.slice/libpod-{ID}.scope", "container", ID[:12]),
        (f"docker/{ID}", "container", ID[:12]),
        (
            "kubepods.slice/kubepods-burstable.slice/"
            "kubepods-burstable-pod0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice",
            "pod",
            "pod0f1e2d3c-4b5",
        ),
        ("kubepods/burstable/pod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "pod", "pod0f1e2d3c-4b5"),
        ("init.scope", "scope", "init.scope"),
        ("perfpulse-test", "other", "perfpulse-test"),
    ],
)
def test_kind_and_name(path, kind, name):
    assert classify(path) == (kind, name)


def test_parsers():
    assert parse_io_stat("8:0 rbytes=100 wbytes=200 rios=1 wios=2\n259:0 rbytes=1 wbytes=2\n") == (
        101,
        202,
    )
    assert parse_blkio_bytes("8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 1\nTotal 12288\n") == (
        4096,
        8192,
    )
    assert parse_pressure_some("some avg10=1.50 avg60=0.20 avg300=0.00 total=123456\n") == (
        1.5,
        123456,
    )
    assert parse_memory_max("max\n") is None
    assert parse_memory_max("9223372036854771712\n") is None  # v1's "no limit"
    assert parse_memory_max("536870912\n") == 536870912


def _v2_group(tree: ProcTree, path: str, *, usec: int, memory: int, io: tuple[int, int]) -> None:
    tree.write(f"{path}/cgroup.events", "populated 1\nfrozen 0\n")
    tree.write(f"{path}/cpu.stat", f"usage_usec {usec}\nuser_usec {usec}\nsystem_usec 0\n")
    tree.write(f"{path}/memory.current", f"{memory}\n")
    tree.write(f"{path}/memory.max", "max\n" if path.endswith("slice") else "1073741824\n")
    tree.write(f"{path}/io.stat", f"8:0 rbytes={io[0]} wbytes={io[1]} rios=1 wios=1\n")
    tree.write(f"{path}/pids.current", "3\n")
    for resource in ("cpu", "memory", "io"):
        tree.write(
            f"{path}/{resource}.pressure",
            "some avg10=2.00 avg60=0.00 avg300=0.00 total=5000000\n"
            "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        )


def _collector(root: Path, clock: FakeClock) -> CgroupsCollector:
    return CgroupsCollector(
        root,
        scan_seconds=10,
        clock=clock,
        wall_clock=lambda: datetime(2026, 12, 4, 10, 0, 5, tzinfo=UTC),
    )


def test_a_v2_tree(sys_tree: ProcTree, clock: FakeClock):
    """Populated groups only (an empty one is left out), rates over the scan window, the
    limit only where there is one, and the busiest first."""
    sys_tree.write("cgroup.controllers", "cpu io memory pids\n")
    _v2_group(sys_tree, "system.slice", usec=0, memory=300, io=(0, 0))
    _v2_group(sys_tree, "system.slice/nginx.service", usec=0, memory=200, io=(0, 0))
    sys_tree.write("system.slice/empty.service/cgroup.events", "populated 0\nfrozen 0\n")
    collector = _collector(sys_tree.root, clock)
    assert collector.collect().to_dict()["groups"][0]["cpu_percent"] is None
    clock.advance(10)
    _v2_group(sys_tree, "system.slice", usec=6_000_000, memory=300, io=(1000, 0))
    _v2_group(sys_tree, "system.slice/nginx.service", usec=5_000_000, memory=200, io=(1000, 0))
    data = collector.collect().to_dict()
    assert data["version"] == 2 and data["left_out"] == 0
    assert [g["path"] for g in data["groups"]] == ["system.slice", "system.slice/nginx.service"]
    nginx = data["groups"][1]
    assert nginx == {
        "path": "system.slice/nginx.service",
        "kind": "service",
        "name": "nginx.service",
        "cpu_percent": 50.0,  # 5 s of CPU in 10 s
        "memory_bytes": 200,
        "memory_limit_bytes": 1073741824,
        "read_bytes_per_second": 100.0,
        "write_bytes_per_second": 0.0,
        "tasks": 3,
        "pressure": {"cpu": 2.0, "memory": 2.0, "io": 2.0},
    }
    assert data["groups"][0]["memory_limit_bytes"] is None


def test_a_hybrid_tree_takes_memory_io_and_tasks_from_v1(sys_tree: ProcTree, clock: FakeClock):
    sys_tree.write("unified/cgroup.controllers", "\n")
    sys_tree.write("unified/app.service/cgroup.events", "populated 1\n")
    sys_tree.write("unified/app.service/cpu.stat", "usage_usec 1000000\n")
    for controller in ("memory", "blkio", "pids"):
        sys_tree.write(f"{controller}/cgroup.procs", "1\n")
    sys_tree.write("memory/app.service/memory.usage_in_bytes", "4096\n")
    sys_tree.write("memory/app.service/memory.limit_in_bytes", "9223372036854771712\n")
    sys_tree.write(
        "blkio/app.service/blkio.throttle.io_service_bytes_recursive", "8:0 Read 10\n8:0 Write 20\n"
    )
    sys_tree.write("pids/app.service/pids.current", "2\n")
    layout = find_layout(sys_tree.root)
    assert (layout.version, layout.names.name) == (2, "unified")
    group = _collector(sys_tree.root, clock).collect().to_dict()["groups"][0]
    assert (group["memory_bytes"], group["memory_limit_bytes"], group["tasks"]) == (4096, None, 2)


def test_a_v1_tree_names_groups_by_systemd_and_counts_cpu_from_cpuacct(
    sys_tree: ProcTree, clock: FakeClock
):
    sys_tree.write("systemd/cgroup.procs", "1\n")
    sys_tree.write("systemd/system.slice/db.service/cgroup.procs", "42\n43\n")
    sys_tree.write("systemd/system.slice/idle.service/cgroup.procs", "")
    sys_tree.write("cpuacct/cgroup.procs", "1\n")
    sys_tree.write("cpuacct/system.slice/db.service/cpuacct.usage", "0\n")
    sys_tree.write("cpuacct/system.slice/cpuacct.usage", "0\n")
    collector = _collector(sys_tree.root, clock)
    collector.collect()
    clock.advance(10)
    sys_tree.write("cpuacct/system.slice/db.service/cpuacct.usage", "2500000000\n")  # ns
    data = collector.collect().to_dict()
    assert data["version"] == 1
    paths = {g["path"]: g for g in data["groups"]}
    assert set(paths) == {"system.slice", "system.slice/db.service"}  # idle has no process
    assert paths["system.slice/db.service"]["cpu_percent"] == 25.0


def test_no_cgroup_filesystem_is_no_data(tmp_path: Path):
    with pytest.raises(Unavailable, match="no cgroup hierarchy"):
        find_layout(tmp_path)


def test_the_bound_leaves_the_least_busy_out(sys_tree: ProcTree, clock: FakeClock):
    sys_tree.write("cgroup.controllers", "cpu\n")
    for i in range(5):
        _v2_group(sys_tree, f"g{i}.service", usec=0, memory=i, io=(0, 0))
    collector = CgroupsCollector(sys_tree.root, max_groups=3, clock=clock)
    collector.collect()
    clock.advance(10)
    for i in range(5):
        _v2_group(sys_tree, f"g{i}.service", usec=i * 1_000_000, memory=i, io=(0, 0))
    data = collector.collect().to_dict()
    assert [g["name"] for g in data["groups"]] == ["g4.service", "g3.service", "g2.service"]
    assert data["left_out"] == 2


# --- real cgroups on this machine's kernel -------------------------------------------------------

CGROUP = Path("/sys/fs/cgroup")


def unified_root() -> Path:
    for candidate in (CGROUP, CGROUP / "unified"):
        if (candidate / "cgroup.controllers").exists():
            return candidate
    pytest.fail("no cgroup2 hierarchy on this machine (neither /sys/fs/cgroup nor unified)")


@contextlib.contextmanager
def real_group(name: str, hierarchies: list[Path]) -> Iterator[list[Path]]:
    """A cgroup of this name in each hierarchy; removed whatever happens (its processes
    moved back to the root first)."""
    made = []
    try:
        for root in hierarchies:
            (root / name).mkdir()
            made.append(root / name)
        yield made
    finally:
        for group in reversed(made):
            with contextlib.suppress(OSError):
                for pid in (group / "cgroup.procs").read_text().split():
                    (group.parent / "cgroup.procs").write_text(pid)
            for _ in range(50):
                try:
                    group.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


def burner() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def test_a_real_v2_group_with_a_burner_in_it():
    """A cgroup made under the machine's cgroup2 hierarchy, a CPU burner moved into it:
    the collector reports it with about a core of CPU."""
    unified = unified_root()
    with real_group("perfpulse-test-v2.service", [unified]) as (group,):
        process = burner()
        try:
            (group / "cgroup.procs").write_text(str(process.pid))
            collector = CgroupsCollector(CGROUP, scan_seconds=0.5)
            collector.collect()
            time.sleep(1.0)
            data = collector.collect().to_dict()
        finally:
            process.kill()
            process.wait()
    found = {g["path"]: g for g in data["groups"]}
    entry = found["perfpulse-test-v2.service"]
    assert entry["kind"] == "service"
    assert 50 < entry["cpu_percent"] <= 105, entry


def test_a_real_v1_group_where_v1_is_mounted():
    """On a v1 (or hybrid) machine, the same group made in the v1 memory and pids
    controllers gives its memory and tasks."""
    v1 = [CGROUP / c for c in ("memory", "pids") if (CGROUP / c / "cgroup.procs").exists()]
    if not v1:
        assert (CGROUP / "cgroup.controllers").exists()  # pure v2: nothing of v1 to test
        return
    unified = unified_root()
    with real_group("perfpulse-test-v1.service", [unified, *v1]) as groups:
        # It allocates once it has been moved: v1 charges memory where it is allocated.
        allocate = "import time; time.sleep(0.5); b = b'x' * (64 << 20); time.sleep(30)"
        process = subprocess.Popen([sys.executable, "-c", allocate])
        try:
            for group in groups:
                (group / "cgroup.procs").write_text(str(process.pid))
            time.sleep(1.5)
            data = CgroupsCollector(CGROUP).collect().to_dict()
        finally:
            process.kill()
            process.wait()
    entry = {g["path"]: g for g in data["groups"]}["perfpulse-test-v1.service"]
    assert entry["tasks"] == 1
    assert entry["memory_bytes"] >= 64 << 20
