"""IPAM, port parsing and hosts-file rendering: pure logic, no root."""

from __future__ import annotations

import ipaddress

import pytest

from pyengine.errors import Conflict, UsageError
from pyengine.network import hosts, ipam
from pyengine.network.ports import parse_publish


def test_pick_subnet_skips_taken_subnets_and_host_routes() -> None:
    taken = [ipaddress.IPv4Network("10.199.0.0/24"), ipaddress.IPv4Network("10.199.1.0/25")]
    assert str(ipam.pick_subnet(["10.199.0.0/16"], 24, taken)) == "10.199.2.0/24"


def test_pick_subnet_reports_an_exhausted_pool() -> None:
    with pytest.raises(Conflict, match="subnet-pool"):
        ipam.pick_subnet(["10.5.0.0/24"], 24, [ipaddress.IPv4Network("10.0.0.0/8")])


def test_overlapping_subnet_is_refused_naming_the_other_network() -> None:
    with pytest.raises(Conflict, match="overlaps 10.1.0.0/16 of network 'a'"):
        ipam.check_no_overlap(ipaddress.IPv4Network("10.1.2.0/24"),
                              {"network 'a'": ipaddress.IPv4Network("10.1.0.0/16")})


def test_allocate_skips_used_addresses_and_honours_range_and_wanted() -> None:
    subnet = ipaddress.IPv4Network("10.9.0.0/24")
    assert str(ipam.allocate(subnet, None, ["10.9.0.1", "10.9.0.2"])) == "10.9.0.3"
    assert str(ipam.allocate(subnet, ipaddress.IPv4Network("10.9.0.128/25"), ["10.9.0.1"])) == "10.9.0.129"
    assert str(ipam.allocate(subnet, None, ["10.9.0.1"], "10.9.0.50")) == "10.9.0.50"
    with pytest.raises(Conflict):
        ipam.allocate(subnet, None, ["10.9.0.50"], "10.9.0.50")
    with pytest.raises(UsageError):
        ipam.allocate(subnet, None, [], "10.8.0.5")


def test_parse_publish_forms() -> None:
    assert (m := parse_publish("18080:8080")).host_port == 18080 and m.container_port == 8080
    assert parse_publish("127.0.0.1:53:53/udp").host_ip == "127.0.0.1"
    assert parse_publish("80").host_port == 0
    with pytest.raises(UsageError):
        parse_publish("80/sctp")
    with pytest.raises(UsageError):
        parse_publish("99999:80")


def test_hosts_content_lists_self_peers_and_added_hosts(tmp_path) -> None:  # noqa: ANN001
    text = hosts.hosts_content([("10.0.0.2", ["web"])], [("10.0.0.3", ["db", "database"])], [("gw", "10.0.0.1")])
    assert "10.0.0.2\tweb" in text and "10.0.0.3\tdb database" in text and "10.0.0.1\tgw" in text
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.53\nnameserver 192.0.2.53\nsearch example.org\n")
    assert hosts.resolv_conf_content(host_file=conf) == "nameserver 192.0.2.53\nsearch example.org\n"
    assert hosts.resolv_conf_content(["1.1.1.1"], host_file=conf).startswith("nameserver 1.1.1.1\n")
