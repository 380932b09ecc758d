"""Names the routers know (routers/hostnames.py parsers), how the aggregator reads them back
(flowagg/names.py), and what the pipeline renders to carry them (render/goflow2.py). Reading them over
real SSH from both lab routers: tests/pipeline/test_flows.py."""
from __future__ import annotations

import json
import os

from netviz_pipeline.flowagg import names as nm
from netviz_pipeline.render import goflow2
from netviz_pipeline.routers import hostnames as hn
from netviz_pipeline.routers import registry

PFSENSE_CONFIG = """<?xml version="1.0"?>
<pfsense>
  <dhcpd>
    <lan>
      <enable/>
      <staticmap><mac>02:00:00:00:00:01</mac><ipaddr>192.168.1.20</ipaddr><hostname>nas</hostname><descr>NAS</descr></staticmap>
      <staticmap><mac>02:00:00:00:00:02</mac><ipaddr>192.168.1.21</ipaddr><hostname></hostname></staticmap>
    </lan>
    <opt1>
      <staticmap><mac>02:00:00:00:00:03</mac><ipaddr>10.0.5.9</ipaddr><hostname>printer</hostname></staticmap>
    </opt1>
  </dhcpd>
  <dhcpdv6>
    <lan><staticmap><duid>00:01</duid><ipaddrv6>2001:db8::20</ipaddrv6><hostname>nas6</hostname></staticmap></lan>
  </dhcpdv6>
  <unbound>
    <hosts><host>git</host><domain>home.arpa</domain><ip>192.168.1.30,192.168.1.31</ip></hosts>
  </unbound>
</pfsense>
"""

ISC_LEASES = """# The format of this file is documented in the dhcpd.leases(5) manual page.
lease 192.168.1.50 {
  starts 4 2026/11/26 10:00:00;
  ends 4 2026/11/26 22:00:00;
  binding state active;
  next binding state free;
  hardware ethernet 02:00:00:00:00:50;
  client-hostname "laptop";
}
lease 192.168.1.51 {
  binding state active;
  client-hostname "phone";
}
lease 192.168.1.51 {
  binding state free;
  next binding state free;
}
lease 192.168.1.52 {
  binding state active;
}
"""

KEA_LEASES = """address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context,pool_id
192.168.1.60,02:00:00:00:00:60,,3600,1795700000,1,0,0,tv.home.arpa.,0,,0
192.168.1.61,02:00:00:00:00:61,,3600,1795700000,1,0,0,old,0,,0
192.168.1.61,02:00:00:00:00:61,,0,1795700000,1,0,0,old,0,,0
192.168.1.62,02:00:00:00:00:62,,3600,1795700000,1,0,0,declined,1,,0
"""

DNSMASQ_LEASES = """1795700000 02:00:00:00:00:70 192.168.1.70 pi 01:02:00:00:00:00:70
1795700000 02:00:00:00:00:71 192.168.1.71 * 01:02:00:00:00:00:71
duid 00:01:00:01:2c:00:00:00:02:00:00:00:00:70
1795700000 1234 2001:db8::70 pi6 00:01:00:01
"""

HOSTS = """127.0.0.1\tlocalhost
::1 localhost ip6-localhost
192.168.1.1 router.home.arpa router   # the router itself
fe80::1%lan0 linklocal
192.168.1.80 bad|name
192.168.1.20 nas-from-hosts
"""


def test_pfsense_static_mappings_and_resolver_overrides():
    got = hn.merge([("/cf/conf/config.xml", hn.parse_pfsense(PFSENSE_CONFIG))])
    assert got.names == {"192.168.1.20": "nas", "10.0.5.9": "printer", "2001:db8::20": "nas6",
                         "192.168.1.30": "git", "192.168.1.31": "git"}
    assert got.skipped == 1  # the mapping without a hostname


def test_isc_leases_keep_the_newest_block_and_only_active_bindings():
    assert hn.parse_isc(ISC_LEASES) == [("192.168.1.50", "laptop")]


def test_kea_leases_drop_deleted_and_declined_and_the_trailing_dot():
    got = hn.merge([("kea", hn.parse_kea(KEA_LEASES))])
    assert got.names == {"192.168.1.60": "tv.home.arpa"}


def test_dnsmasq_leases_v4_and_v6_without_unnamed():
    got = hn.merge([("dnsmasq", hn.parse_dnsmasq(DNSMASQ_LEASES))])
    assert got.names == {"192.168.1.70": "pi", "2001:db8::70": "pi6"}


def test_hosts_file_first_name_no_loopback_no_link_local_no_bad_names():
    got = hn.merge([("/etc/hosts", hn.parse_hosts(HOSTS))])
    assert got.names == {"192.168.1.1": "router.home.arpa", "192.168.1.20": "nas-from-hosts"}
    assert got.skipped == 4  # two loopback, one link-local, one name the aggregator's labels refuse


def test_the_first_source_naming_an_address_wins_and_counts_per_file():
    got = hn.merge([("/cf/conf/config.xml", hn.parse_pfsense(PFSENSE_CONFIG)), ("/etc/hosts", hn.parse_hosts(HOSTS))])
    assert got.names["192.168.1.20"] == "nas"  # the static mapping, not /etc/hosts' name
    assert got.found == {"/cf/conf/config.xml": 5, "/etc/hosts": 2}
    assert got.summary().startswith("6 names (5 from /cf/conf/config.xml, 2 from /etc/hosts)")


def test_a_kea_file_without_its_header_is_a_problem_not_names():
    try:
        hn.parse_kea("192.168.1.60,02:00,,3600\n")
    except ValueError as e:
        assert "header" in str(e)
    else:
        raise AssertionError("no error")


def test_every_ssh_platform_reads_hosts_and_at_least_one_dhcp_source():
    for name in ("linux", "pfsense", "freebsd"):
        sources = registry.get(name).name_sources
        formats = [s.format for s in sources]
        assert formats[-1] == "hosts" and len(formats) >= 3, name
        assert all(s.path.startswith("/") and s.format in hn.PARSERS for s in sources)
    assert registry.get("pfsense").name_sources[0] == hn.NameSource("/cf/conf/config.xml", "pfsense")
    assert registry.get("opnsense").name_sources == ()  # the API driver has no SSH to read files with


# -- the aggregator reads them back ----------------------------------------------------------------------
def write(path, names: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(names))
    os.replace(tmp, path)  # as the kubelet swaps a projected file: a new inode


def test_the_aggregator_rereads_router_names_and_keeps_the_last_good_ones(tmp_path):
    now = [0.0]
    n = nm.Names(hosts={"192.168.1.20": "nas-by-settings"}, router_hosts_dir=str(tmp_path), clock=lambda: now[0])
    n.refresh()
    assert n.resolve("192.168.1.70") == (None, "address")  # no router step yet: an empty directory
    write(tmp_path / "edge-b.json", {"192.168.1.70": "pi-b", "192.168.1.71": "tv"})
    write(tmp_path / "edge-a.json", {"192.168.1.70": "pi", "192.168.1.20": "nas"})
    n.refresh()
    assert n.resolve("192.168.1.70") == (None, "address")  # looked at no more often than reload_seconds
    now[0] += 11
    n.refresh()
    assert n.resolve("192.168.1.70") == ("pi", "host")  # router files merge in name order
    assert n.name("192.168.1.71") == "tv"
    assert n.name("192.168.1.20") == "nas-by-settings"  # the settings' map beats a router's name
    (tmp_path / "edge-a.json").write_text("{not json")
    now[0] += 11
    n.refresh()
    assert n.name("192.168.1.70") == "pi" and n.router_hosts_errors == 1  # last good names kept
    write(tmp_path / "edge-a.json", {"192.168.1.72": "new"})
    now[0] += 11
    n.refresh()
    assert (n.name("192.168.1.70"), n.name("192.168.1.72")) == ("pi-b", "new")
    (tmp_path / "edge-b.json").unlink()
    now[0] += 11
    n.refresh()
    assert n.name("192.168.1.71") is None
    samples = {m: s for m, _, _, s in n.samples()}
    assert ((("kind", "router_hosts"),), 1) in samples["netviz_flow_names_entries"]
    assert sum(len(s) for s in samples.values()) == nm.Names.SERIES


def test_cluster_names_beat_router_names(tmp_path):
    c = nm.ClusterNames()
    c.replace("nodes", [{"metadata": {"name": "worker-1", "uid": "n1", "resourceVersion": "1"},
                         "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.11"}]}}])
    write(tmp_path / "edge.json", {"192.168.1.11": "stale-router-name"})
    n = nm.Names(c, router_hosts_dir=str(tmp_path))
    n.refresh()
    assert n.resolve("192.168.1.11") == ("node/worker-1", "node")
    assert {n.resolve(a)[1] for a in ("192.168.1.11", "192.168.1.12")} <= set(nm.Names.KINDS)


# -- what the pipeline renders ---------------------------------------------------------------------------
def test_one_optional_configmap_per_router_projected_into_the_aggregator_only(settings):
    dep = next(o for o in goflow2.render(settings) if o["kind"] == "Deployment")
    spec = dep["spec"]["template"]["spec"]
    vol = next(v for v in spec["volumes"] if v["name"] == goflow2.ROUTER_HOSTS_VOLUME)
    assert [s["configMap"] for s in vol["projected"]["sources"]] == [
        {"name": f"goflow2-flowagg-hosts-{r.name}", "optional": True,
         "items": [{"key": "hosts.json", "path": f"{r.name}.json"}]} for r in settings.routers]
    gf, agg = spec["containers"]
    assert {"name": "router-hosts", "mountPath": goflow2.ROUTER_HOSTS_DIR, "readOnly": True} in agg["volumeMounts"]
    assert all(m["name"] != "router-hosts" for m in gf["volumeMounts"])
    cm = next(o for o in goflow2.render(settings) if o["metadata"]["name"] == "goflow2-flowagg")
    assert json.loads(cm["data"]["config.json"])["names"]["router_hosts_dir"] == goflow2.ROUTER_HOSTS_DIR


def test_router_names_configmap_is_the_same_object_for_the_same_names(settings):
    a = goflow2.router_hosts_configmap(settings, "edge-linux", {"192.168.1.9": "b", "192.168.1.10": "a"})
    b = goflow2.router_hosts_configmap(settings, "edge-linux", {"192.168.1.10": "a", "192.168.1.9": "b"})
    assert a == b and a["metadata"]["namespace"] == settings.goflow2.namespace
    assert json.loads(a["data"]["hosts.json"]) == {"192.168.1.10": "a", "192.168.1.9": "b"}


def test_names_from_routers_off_renders_no_volume(make):
    s = make(flows={"names": {"from_routers": False}})
    dep = next(o for o in goflow2.render(s) if o["kind"] == "Deployment")
    assert all(v["name"] != "router-hosts" for v in dep["spec"]["template"]["spec"]["volumes"])
    cm = next(o for o in goflow2.render(s) if o["metadata"]["name"] == "goflow2-flowagg")
    assert json.loads(cm["data"]["config.json"])["names"]["router_hosts_dir"] is None


# -- reading them: the one command, run by a real local shell --------------------------------------------
class LocalShell:
    """A Session whose commands run here, quoted into one command line as RouterSession sends it
    (sshd hands that line to the login shell's -c)."""

    def run(self, argv, *, stdin=None, timeout=None):
        import subprocess

        from netviz_pipeline.resources.router import Result, quote_argv
        done = subprocess.run(["sh", "-c", quote_argv(argv)], capture_output=True, text=True, timeout=30)
        return Result(done.returncode, done.stdout, done.stderr)


def test_one_command_reads_every_source_and_tells_absent_from_unreadable(tmp_path):
    (tmp_path / "leases").write_text(DNSMASQ_LEASES)
    (tmp_path / "hosts").write_text(HOSTS.rstrip("\n"))  # no final newline: the marker still splits
    (tmp_path / "config.xml").write_text("<pfsense><dhcpd>")
    unreadable = tmp_path / "a-directory"  # head fails on it, also as root (a 0000 file root would read)
    unreadable.mkdir()
    sources = (hn.NameSource(str(tmp_path / "config.xml"), "pfsense"), hn.NameSource(str(tmp_path / "leases"), "dnsmasq"),
               hn.NameSource(str(tmp_path / "missing"), "isc"), hn.NameSource(str(unreadable), "hosts"),
               hn.NameSource(str(tmp_path / "hosts"), "hosts"))
    got = hn.read(LocalShell(), sources)
    assert got.names == {"192.168.1.70": "pi", "2001:db8::70": "pi6", "192.168.1.1": "router.home.arpa",
                         "192.168.1.20": "nas-from-hosts"}
    assert got.absent == [str(tmp_path / "missing")]
    problems = " ".join(got.problems)
    assert "config.xml: config.xml does not parse" in problems
    assert f"{unreadable}: cannot read" in problems


def test_the_output_split_keeps_each_files_bytes_exactly():
    b = "netviz-names-0123"
    out = f"one\ntwo\n\n{b} ok /a\n\n{b} absent /b\nthree\n{b} ok /c\n"
    assert hn.split_read_all(out, b) == [("/a", "ok", "one\ntwo\n"), ("/b", "absent", ""), ("/c", "ok", "three")]
