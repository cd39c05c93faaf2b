"""A three-namespace lab: LAN host — router (nftables NAT + miniupnpd) — "internet" (STUN, BIND).

    ns-dd-<pid>-<rand>-lan      192.168.77.2/24, default via the router
    ns-dd-<pid>-<rand>-router   LAN 192.168.77.1/24; WAN 192.0.3.10/24 (or 100.64.0.10/10 for
                                carrier-grade NAT), masquerade out of WAN, miniupnpd (UPnP IGD +
                                NAT-PMP, secure mode, ports 1024-65535 only)
    ns-dd-<pid>-<rand>-inet     192.0.3.1/24 and 100.64.0.1/10: coturn STUN and BIND 9

Connected by veth pairs only: nothing is bridged to a host interface and no namespace has a route
out of the lab. 192.0.3.0/24 stands for "the internet" because miniupnpd refuses documentation
ranges (192.0.2.0/24 ...) and private ones as its external address; the lab has no route to the
real 192.0.3.0/24, so the choice touches nothing outside. Every process is started and stopped
by PID; :meth:`Lab.close` always deletes the namespaces (which deletes the veths in them).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

from tests.ddns.servers import stop

PREFIX = "ns-dd-"
LAN_HOST = "192.168.77.2"
LAN_ROUTER = "192.168.77.1"
INET = "192.0.3.1"
INET_SHARED = "100.64.0.1"
PUBLIC = "192.0.3.10"
PUBLIC_NEXT = "192.0.3.11"
CGNAT = "100.64.0.10"
# IPv6 is routed, not translated: the LAN host holds a global address itself. Like the IPv4
# "internet", these prefixes exist only inside the lab (2001:db8::/32 would be judged
# "reserved", which is right for documentation but not what this lab plays).
LAN6_HOST = "2a0e:97c0:77::2"
LAN6_ROUTER = "2a0e:97c0:77::1"
WAN6_ROUTER = "2a0e:97c0:3::10"
INET6 = "2a0e:97c0:3::1"
NATSYNC = [sys.executable, "-c", "from natsync.cli import main; main()"]


def sh(*args: str, check: bool = True, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=timeout)


def cleanup_leftovers() -> None:
    """Delete lab namespaces of earlier test runs whose process is gone (crashed runs)."""
    listing = sh("ip", "netns", "list", check=False).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(PREFIX):
            continue
        owner = name[len(PREFIX) :].split("-")[0]
        if owner.isdigit() and int(owner) != os.getpid() and Path(f"/proc/{owner}").exists():
            continue  # another live test session owns it
        for pid in sh("ip", "netns", "pids", name, check=False).stdout.split():
            _kill_pid(int(pid))
        sh("ip", "netns", "del", name, check=False)


def _kill_pid(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 15)


class Lab:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        tag = secrets.token_hex(2)
        base = f"{PREFIX}{os.getpid()}-{tag}"
        self.lan, self.router, self.inet = f"{base}-lan", f"{base}-router", f"{base}-inet"
        short = f"dd{tag}"
        self.lan_if, self.router_lan_if = f"{short}l0", f"{short}l1"
        self.wan_if, self.inet_if = f"{short}w0", f"{short}w1"
        self.wan_address = PUBLIC
        self.procs: list[subprocess.Popen[bytes]] = []
        self.miniupnpd: subprocess.Popen[bytes] | None = None

    # -- building -------------------------------------------------------------------------
    def ns(
        self, ns: str, *args: str, check: bool = True, timeout: float = 10
    ) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", ns, *args, check=check, timeout=timeout)

    def build(self) -> None:
        for ns in (self.lan, self.router, self.inet):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh(
            "ip",
            "link",
            "add",
            self.lan_if,
            "netns",
            self.lan,
            "type",
            "veth",
            "peer",
            "name",
            self.router_lan_if,
            "netns",
            self.router,
        )
        sh(
            "ip",
            "link",
            "add",
            self.wan_if,
            "netns",
            self.router,
            "type",
            "veth",
            "peer",
            "name",
            self.inet_if,
            "netns",
            self.inet,
        )
        sh("ip", "-n", self.lan, "addr", "add", f"{LAN_HOST}/24", "dev", self.lan_if)
        sh("ip", "-n", self.router, "addr", "add", f"{LAN_ROUTER}/24", "dev", self.router_lan_if)
        sh("ip", "-n", self.inet, "addr", "add", f"{INET}/24", "dev", self.inet_if)
        sh("ip", "-n", self.inet, "addr", "add", f"{INET_SHARED}/10", "dev", self.inet_if)
        for ns, dev in (
            (self.lan, self.lan_if),
            (self.router, self.router_lan_if),
            (self.router, self.wan_if),
            (self.inet, self.inet_if),
        ):
            sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", self.lan, "route", "add", "default", "via", LAN_ROUTER)
        for ns, dev, address in (
            (self.lan, self.lan_if, LAN6_HOST),
            (self.router, self.router_lan_if, LAN6_ROUTER),
            (self.router, self.wan_if, WAN6_ROUTER),
            (self.inet, self.inet_if, INET6),
        ):
            sh("ip", "-n", ns, "-6", "addr", "add", f"{address}/64", "dev", dev, "nodad")
        sh("ip", "-n", self.lan, "-6", "route", "add", "default", "via", LAN6_ROUTER)
        sh("ip", "-n", self.router, "-6", "route", "add", "default", "via", INET6)
        sh("ip", "-n", self.inet, "-6", "route", "add", "2a0e:97c0:77::/64", "via", WAN6_ROUTER)
        self.ns(self.router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.ns(self.router, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        self._set_wan_address(PUBLIC)
        ruleset = f"""
table inet miniupnpd {{
  chain forward {{
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    iifname "{self.router_lan_if}" oifname "{self.wan_if}" accept
    jump miniupnpd
  }}
  chain miniupnpd {{
  }}
  chain prerouting {{
    type nat hook prerouting priority -100; policy accept;
    jump prerouting_miniupnpd
  }}
  chain postrouting {{
    type nat hook postrouting priority 100; policy accept;
    jump postrouting_miniupnpd
    oifname "{self.wan_if}" meta nfproto ipv4 masquerade
  }}
  chain prerouting_miniupnpd {{
  }}
  chain postrouting_miniupnpd {{
  }}
}}
"""
        (self.dir / "router.nft").write_text(ruleset)
        self.ns(self.router, "nft", "-f", str(self.dir / "router.nft"))
        self.start_miniupnpd()

    def _set_wan_address(self, address: str) -> None:
        prefix, gateway = ("10", INET_SHARED) if address.startswith("100.64.") else ("24", INET)
        sh("ip", "-n", self.router, "-4", "addr", "flush", "dev", self.wan_if)
        sh("ip", "-n", self.router, "addr", "add", f"{address}/{prefix}", "dev", self.wan_if)
        sh("ip", "-n", self.router, "route", "replace", "default", "via", gateway)
        self.wan_address = address

    def set_wan_address(self, address: str) -> None:
        """Renumber the router's WAN side (the ISP hands out a new address), and restart
        miniupnpd so that its NAT-PMP epoch and external address start afresh."""
        self._set_wan_address(address)
        self.restart_miniupnpd()

    def start_miniupnpd(self) -> None:
        conf = self.dir / "miniupnpd.conf"
        conf.write_text(f"""ext_ifname={self.wan_if}
listening_ip={self.router_lan_if}
http_port=0
enable_natpmp=yes
enable_upnp=yes
secure_mode=yes
system_uptime=no
uuid=3b4f1c2e-0000-4000-8000-{secrets.token_hex(6)}
lease_file={self.dir}/upnp.leases
upnp_table_name=miniupnpd
upnp_nat_table_name=miniupnpd
upnp_forward_chain=miniupnpd
upnp_nat_chain=prerouting_miniupnpd
upnp_nat_postrouting_chain=postrouting_miniupnpd
allow 1024-65535 192.168.77.0/24 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
""")
        log = (self.dir / "miniupnpd.log").open("ab")
        self.miniupnpd = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.router,
                "miniupnpd",
                "-f",
                str(conf),
                "-d",
                "-P",
                str(self.dir / "miniupnpd.pid"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs.append(self.miniupnpd)
        deadline = time.monotonic() + 10
        while b"Listening for NAT-PMP" not in (self.dir / "miniupnpd.log").read_bytes():
            if self.miniupnpd.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "miniupnpd did not start: " + (self.dir / "miniupnpd.log").read_text()[-2000:]
                )
            time.sleep(0.05)

    def restart_miniupnpd(self) -> None:
        if self.miniupnpd is not None:
            stop(self.miniupnpd)
            self.procs.remove(self.miniupnpd)
        (self.dir / "miniupnpd.log").write_bytes(b"")
        self.start_miniupnpd()

    def spawn(self, ns: str, *args: str, log: str) -> subprocess.Popen[bytes]:
        with (self.dir / log).open("ab") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, *args], stdout=out, stderr=subprocess.STDOUT
            )
        self.procs.append(proc)
        return proc

    def natsync(
        self, *args: str, check: bool = False, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run the natsync CLI inside the LAN namespace."""
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        return subprocess.run(
            ["ip", "netns", "exec", self.lan, *NATSYNC, *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
            env=env,
        )

    def close(self) -> None:
        for proc in reversed(self.procs):
            stop(proc)
        self.procs.clear()
        for ns in (self.lan, self.router, self.inet):
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                _kill_pid(int(pid))  # a process our code started inside, e.g. a test server
            sh("ip", "netns", "del", ns, check=False)
