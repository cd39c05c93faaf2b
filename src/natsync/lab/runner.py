"""The thin I/O half of the lab: runs the plan of :mod:`natsync.lab.topology` with ``ip`` and
``nft``, starts processes inside the namespaces by PID, and takes everything down again.

A run records itself in ``STATE_ROOT/<tag>/state.json`` before it builds anything (its tag,
its directory, the PID of the process that owns it, 0 for a run left up by ``natsync lab
up``), so ``down`` finds it after a crash; without the file, ``down`` still finds the run's
namespaces by their prefix. Every process the lab starts runs inside one of its namespaces, so
``ip netns pids`` finds it too.
"""

# ruff: noqa: S603, S607 - the lab runs fixed programs (ip, nft, named ...) found on PATH,
# with argument lists, never a shell line

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from natsync.lab import topology as t
from natsync.lab.errors import LabError, NotRoot
from natsync.lab.services import stop, wait_log

#: Where runs record themselves (a tmpfs: a reboot forgets runs, as it forgets namespaces).
STATE_ROOT = Path(os.environ.get("NATSYNC_LAB_STATE", "/run/natsync-lab"))
#: `ip netns exec NS` bind-mounts /etc/netns/NS/{hosts,resolv.conf} over /etc: the phone's own.
NETNS_ETC = Path("/etc/netns")
#: Seconds one ip/nft/sysctl command may take.
COMMAND_TIMEOUT = 10.0
#: Seconds between SIGTERM and SIGKILL for a process found in a namespace at down.
KILL_GRACE = 3.0
#: The natsync CLI as a command line, run by this interpreter (the venv's).
NATSYNC = [sys.executable, "-c", "from natsync.cli import main; main()"]
#: Executables the lab needs (Debian: iproute2 nftables miniupnpd-nftables bind9 coturn pebble).
NEEDED = ("ip", "nft", "miniupnpd", "named", "dig", "turnserver", "pebble")


def sh(
    *args: str, check: bool = True, timeout: float = COMMAND_TIMEOUT, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            args, capture_output=True, text=True, check=check, timeout=timeout, input=stdin
        )
    except subprocess.CalledProcessError as exc:
        raise LabError(
            f"`{' '.join(args)}` failed ({exc.returncode}): {exc.stderr.strip()[-500:]}"
        ) from exc


def require_root() -> None:
    if os.geteuid() != 0:
        raise NotRoot()
    missing = [tool for tool in NEEDED if shutil.which(tool) is None]
    if missing:
        raise LabError(f"missing {', '.join(missing)}: run `make apt-test` (Debian packages)")


def _kill_pid(pid: int, sig: int = signal.SIGTERM) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def namespace_pids(ns: str) -> list[int]:
    listing = sh("ip", "netns", "pids", ns, check=False).stdout
    return [int(p) for p in listing.split() if p.isdigit()]


def lab_namespaces() -> dict[str, list[str]]:
    """Tag -> the namespaces of that run that exist now."""
    runs: dict[str, list[str]] = {}
    for line in sh("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        tag = t.tag_of(name)
        if tag is not None:
            runs.setdefault(tag, []).append(name)
    return runs


@dataclass(frozen=True, slots=True)
class RunState:
    tag: str
    directory: str
    #: The process that owns the run (a test session); 0: left up on purpose (`lab up`).
    owner_pid: int
    wan_address: str = t.PUBLIC

    @staticmethod
    def path(tag: str) -> Path:
        return STATE_ROOT / tag / "state.json"

    @classmethod
    def load(cls, tag: str) -> RunState | None:
        try:
            data = json.loads(cls.path(tag).read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None

    def save(self) -> None:
        path = self.path(self.tag)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({f: getattr(self, f) for f in self.__slots__}))


def down(tag: str) -> list[str]:
    """Remove everything of run ``tag``: its processes (by PID, found in its namespaces), its
    namespaces (and with them its veths), the phone's /etc/netns files and its state. Returns
    what was removed, for the narration. Safe to repeat, and after a crash."""
    names = t.Names(tag)
    removed: list[str] = []
    existing = set(lab_namespaces().get(tag, []))
    pids = [pid for ns in names.namespaces if ns in existing for pid in namespace_pids(ns)]
    for pid in pids:
        _kill_pid(pid)
    deadline = time.monotonic() + KILL_GRACE
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        if _alive(pid):
            _kill_pid(pid, signal.SIGKILL)
    if pids:
        removed.append(f"{len(pids)} processes")
    for ns in names.namespaces:
        if ns in existing:
            sh("ip", "netns", "del", ns, check=False)
            removed.append(ns)
        shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)
    state = RunState.load(tag)
    if state is not None and Path(state.directory).is_relative_to(STATE_ROOT):
        shutil.rmtree(state.directory, ignore_errors=True)
    shutil.rmtree(STATE_ROOT / tag, ignore_errors=True)
    return removed


def cleanup_leftovers() -> list[str]:
    """Take down runs whose owner process is gone (crashed test sessions). Runs of a live
    owner, and runs left up on purpose by `natsync lab up`, are left alone."""
    gone: list[str] = []
    for tag in lab_namespaces():
        state = RunState.load(tag)
        if state is not None and (state.owner_pid == 0 or _alive(state.owner_pid)):
            continue
        down(tag)
        gone.append(tag)
    return gone


def list_runs() -> list[tuple[str, RunState | None, list[str]]]:
    """Every run with namespaces on this machine: (tag, its state if recorded, namespaces)."""
    return [(tag, RunState.load(tag), sorted(ns)) for tag, ns in sorted(lab_namespaces().items())]


class Lab:
    """One run of the lab. ``build()`` makes it, ``close()`` takes it down (always safe)."""

    def __init__(
        self,
        directory: Path,
        *,
        tag: str | None = None,
        owner_pid: int | None = None,
        privileged_mappings: bool = False,
        forwards: tuple[tuple[int, str, int], ...] = (),
    ) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tag = tag or secrets.token_hex(2)
        self.names = t.Names(self.tag)
        self.topology = t.Topology(
            self.names,
            directory,
            privileged_mappings=privileged_mappings,
            forwards=forwards,
            uuid_suffix=secrets.token_hex(6),
        )
        self.owner_pid = os.getpid() if owner_pid is None else owner_pid
        n = self.names
        self.lan, self.router = n.ns(t.Role.LAN), n.ns(t.Role.ROUTER)
        self.inet, self.phone = n.ns(t.Role.INET), n.ns(t.Role.PHONE)
        self.vps = n.ns(t.Role.VPS)
        self.lan_if, self.router_lan_if = n.lan_if, n.router_lan_if
        self.wan_if, self.inet_if = n.wan_if, n.inet_if
        self.procs: list[subprocess.Popen[bytes]] = []
        self.miniupnpd: subprocess.Popen[bytes] | None = None

    @property
    def wan_address(self) -> str:
        return self.topology.wan_address

    def _state(self) -> RunState:
        return RunState(self.tag, str(self.dir), self.owner_pid, self.wan_address)

    # -- building -------------------------------------------------------------------------
    def ns(
        self, ns: str, *args: str, check: bool = True, timeout: float = COMMAND_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", ns, *args, check=check, timeout=timeout)

    def run_plan(self, commands: list[t.Command]) -> None:
        for command in commands:
            sh(*command)

    def build(self) -> None:
        if t.Names(self.tag).ns(t.Role.LAN) in lab_namespaces().get(self.tag, []):
            raise LabError(f"a lab run {self.tag} exists already: `natsync lab down {self.tag}`")
        self._state().save()
        self.run_plan(t.plan_up(self.topology))
        (self.dir / "inet.nft").write_text(t.inet_ruleset())
        self.ns(self.inet, "nft", "-f", str(self.dir / "inet.nft"))
        self.load_router_rules()
        self.start_miniupnpd()

    def load_router_rules(self) -> None:
        ruleset = self.dir / "router.nft"
        ruleset.write_text(t.router_ruleset(self.topology))
        self.ns(self.router, "nft", "-f", str(ruleset))

    def set_forwards(self, forwards: tuple[tuple[int, str, int], ...]) -> None:
        """Replace the router's static port forwards (the admin's DNAT rules)."""
        self.topology = replace(self.topology, forwards=forwards)
        self.ns(self.router, "nft", "delete", "table", "inet", "miniupnpd")
        self.load_router_rules()
        self.restart_miniupnpd()  # its rules lived in the table just replaced

    def set_conntrack_idle(self, seconds: int | None) -> None:
        """The router's idle timeout for established TCP connections (None: the kernel's)."""
        self.topology = replace(self.topology, conntrack_idle=seconds)
        self.run_plan(t.plan_conntrack_idle(self.topology, seconds))

    def set_hairpin(self, on: bool, port: int = 443, host_port: int = 443) -> None:
        self.ns(self.router, "nft", "delete", "table", "ip", t.HAIRPIN_TABLE, check=False)
        if on:
            rules = self.dir / "hairpin.nft"
            rules.write_text(
                t.hairpin_ruleset(self.topology, self.wan_address, port, t.LAN_HOST, host_port)
            )
            self.ns(self.router, "nft", "-f", str(rules))

    def set_wan_address(self, address: str) -> None:
        """Renumber the router's WAN side (the ISP hands out a new address), and restart
        miniupnpd so that its NAT-PMP epoch and external address start afresh."""
        self.run_plan(t.plan_wan_address(self.topology, address))
        self.topology = replace(self.topology, wan_address=address)
        self._state().save()
        self.restart_miniupnpd()

    def set_privileged_mappings(self, on: bool, blocked: tuple[int, ...] = ()) -> None:
        """Let miniupnpd map ports below 1024 (or not), never the *blocked* outside ports."""
        self.topology = replace(self.topology, privileged_mappings=on, blocked_ports=blocked)
        self.restart_miniupnpd()

    def start_miniupnpd(self) -> None:
        conf = self.dir / "miniupnpd.conf"
        conf.write_text(t.miniupnpd_conf(self.topology))
        log = self.dir / "miniupnpd.log"
        log.write_bytes(b"")
        pidfile = str(self.dir / "miniupnpd.pid")
        self.miniupnpd = self.spawn(
            self.router, "miniupnpd", "-f", str(conf), "-d", "-P", pidfile, log="miniupnpd.log"
        )
        wait_log(self.miniupnpd, log, b"Listening for NAT-PMP", "miniupnpd")

    def restart_miniupnpd(self) -> None:
        if self.miniupnpd is not None:
            stop(self.miniupnpd)
            self.procs.remove(self.miniupnpd)
        self.start_miniupnpd()

    # -- the phone's own /etc --------------------------------------------------------------
    def netns_etc(
        self, ns: str, *, hosts: dict[str, str] | None = None, resolver: str | None
    ) -> None:
        """Write a namespace's own /etc/hosts (the phone's: the article's registry host entry)
        and resolv.conf, which `ip netns exec` lays over the host's for processes started in
        it from then on; ``resolver`` None removes both."""
        etc = NETNS_ETC / ns
        if resolver is None:
            shutil.rmtree(etc, ignore_errors=True)
            return
        etc.mkdir(parents=True, exist_ok=True)
        lines = ["127.0.0.1 localhost"] + [f"{ip} {name}" for name, ip in (hosts or {}).items()]
        (etc / "hosts").write_text("\n".join(lines) + "\n")
        (etc / "resolv.conf").write_text(f"nameserver {resolver}\noptions timeout:1 attempts:2\n")

    # -- processes ------------------------------------------------------------------------
    def spawn(
        self, ns: str, *args: str, log: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with (self.dir / log).open("ab") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.procs.append(proc)
        return proc

    def forget(self, proc: subprocess.Popen[bytes]) -> None:
        """Stop one process of the run and stop tracking it."""
        stop(proc)
        if proc in self.procs:
            self.procs.remove(proc)

    def env(self) -> dict[str, str]:
        """The environment for natsync run inside a namespace: this interpreter's path."""
        return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))

    def run_in(
        self, ns: str, *args: str, timeout: float = 60, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", ns, *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            env=self.env(),
            input=stdin,
        )

    def natsync(
        self, *args: str, check: bool = False, timeout: float = 60, ns: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the natsync CLI inside a namespace (the LAN host unless told)."""
        done = self.run_in(ns or self.lan, *NATSYNC, *args, timeout=timeout)
        if check and done.returncode != 0:
            raise LabError(f"natsync {' '.join(args)}: {done.stderr.strip()[-1000:]}")
        return done

    def close(self) -> None:
        for proc in reversed(self.procs):
            stop(proc)
        self.procs.clear()
        down(self.tag)
