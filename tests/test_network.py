from __future__ import annotations

import pytest

from exporter.collectors.network import NetworkCollector, parse_net_dev

HEADER = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
"""
NET_1 = (
    HEADER
    + """\
    lo:   36180     481    0    0    0     0          0         0    36180     481    0    0    0     0       0          0
  eth0: 1000000    3000    1    2    0     0          0         0   500000    1500    3    4    0     0       0          0
"""
)
NET_2 = (
    HEADER
    + """\
    lo:   46180     581    0    0    0     0          0         0    46180     581    0    0    0     0       0          0
  eth0: 1400000    3400    1    2    0     0          0         0   700000    1700    3    6    0     0       0          0
 wlan0:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0
"""
)


def test_parse_net_dev_exact_columns():
    parsed = parse_net_dev(NET_1)
    assert parsed["eth0"] == {
        "receive_bytes": 1000000,
        "receive_packets": 3000,
        "receive_errors": 1,
        "receive_drops": 2,
        "transmit_bytes": 500000,
        "transmit_packets": 1500,
        "transmit_errors": 3,
        "transmit_drops": 4,
    }
    assert set(parsed) == {"lo", "eth0"}


def test_first_sample_totals_without_rates(proc, clock):
    proc.write("net/dev", NET_1)
    data = NetworkCollector(proc.root, clock=clock).collect().to_dict()
    assert data["total"]["receive_bytes_total"] == 1000000  # loopback left out
    assert data["total"]["receive_bytes_per_second"] is None
    assert data["interfaces"]["lo"]["receive_bytes_total"] == 36180


def test_rates_per_interface_and_total(proc, clock):
    proc.write("net/dev", NET_1)
    collector = NetworkCollector(proc.root, clock=clock)
    collector.collect()
    proc.write("net/dev", NET_2)
    clock.advance(2.0)
    data = collector.collect().to_dict()
    eth0 = data["interfaces"]["eth0"]
    assert eth0["receive_bytes_per_second"] == pytest.approx(200000.0)
    assert eth0["transmit_bytes_per_second"] == pytest.approx(100000.0)
    assert eth0["transmit_drops_per_second"] == pytest.approx(1.0)
    assert data["interfaces"]["lo"]["receive_packets_per_second"] == pytest.approx(50.0)
    # An interface that just appeared has totals but no rate yet.
    assert data["interfaces"]["wlan0"]["receive_bytes_total"] == 100
    assert data["interfaces"]["wlan0"]["receive_bytes_per_second"] is None
    # The total rate leaves out loopback and the new interface's lifetime bytes.
    assert data["total"]["receive_bytes_per_second"] == pytest.approx(200000.0)
    assert data["total"]["receive_bytes_total"] == 1400100


def test_interface_counter_reset_gives_no_rate(proc, clock):
    proc.write("net/dev", NET_2)
    collector = NetworkCollector(proc.root, clock=clock)
    collector.collect()
    proc.write("net/dev", NET_1)
    clock.advance(1.0)
    data = collector.collect().to_dict()
    assert data["interfaces"]["eth0"]["receive_bytes_per_second"] is None
    assert data["total"]["receive_bytes_per_second"] is None
    for row in data["interfaces"].values():
        assert all(v is None or v >= 0 for k, v in row.items() if k.endswith("_per_second"))


def test_interfaces_say_their_kind_and_whether_the_total_counts_them(proc, clock, tmp_path):
    """Kinds from where sysfs puts the device: under devices/virtual is virtual (bridges,
    veth, ifb); loopback is named; an interface sysfs does not list has no kind."""
    sys_root = tmp_path / "sys"
    (sys_root / "class/net").mkdir(parents=True)
    (sys_root / "class/net/eth0").symlink_to("../../devices/pci0000:00/0000:00:03.0/net/eth0")
    (sys_root / "class/net/lo").symlink_to("../../devices/virtual/net/lo")
    proc.write("net/dev", NET_2.replace("wlan0", "ifb0"))
    (sys_root / "class/net/ifb0").symlink_to("../../devices/virtual/net/ifb0")
    data = NetworkCollector(proc.root, clock=clock, sys_root=sys_root).collect().to_dict()
    kinds = {name: (i["kind"], i["in_total"]) for name, i in data["interfaces"].items()}
    assert kinds == {
        "lo": ("loopback", False),
        "eth0": ("physical", True),
        "ifb0": ("virtual", True),
    }
    proc.write("net/dev", NET_2)  # wlan0 is not in this sysfs
    clock.advance(1.0)
    assert (
        NetworkCollector(proc.root, clock=clock, sys_root=sys_root)
        .collect()
        .to_dict()["interfaces"]["wlan0"]["kind"]
        is None
    )


def test_this_machines_interfaces_have_kinds():
    data = NetworkCollector().collect().to_dict()
    assert data["interfaces"]["lo"]["kind"] == "loopback"
    assert {i["kind"] for i in data["interfaces"].values()} <= {"loopback", "virtual", "physical"}
