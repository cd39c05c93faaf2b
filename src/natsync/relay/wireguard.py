"""WireGuard for the relay: keys, the two ends' settings, and the userspace tunnel process.

The relay path needs a tunnel the home dials out to (a home behind carrier-grade NAT can make
outgoing connections only). WireGuard is the tunnel: small, UDP, authenticated by a key pair at
each end, and with ``PersistentKeepalive`` it keeps the CGNAT's UDP mapping open by itself.
Many kernels (this one included) have no WireGuard module, so the tunnel runs in userspace:
Debian's ``wireguard-go`` creates the interface and ``wg`` (wireguard-tools) configures it
through wireguard-go's control socket. Both are real programs run as they are; natsync writes
their configuration and starts, watches and stops them.

Keys are X25519 key pairs in WireGuard's base64 text form (``wg genkey`` / ``wg pubkey``),
made with ``cryptography`` so no shell-out is needed to create a configuration.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ipaddress
import logging
import os
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from natsync.errors import ConfigError, NatsyncError

log = logging.getLogger("natsync.relay")

#: WireGuard's default UDP port.
DEFAULT_LISTEN_PORT = 51820
#: Seconds between keepalives from home. CGNAT and home routers forget an idle UDP mapping after
#: 30 s to a few minutes (RFC 4787 REQ-5 asks for at least 2 minutes; many keep 30 s); 25 s is
#: WireGuard's own recommendation for peers behind NAT and stays under the shortest.
DEFAULT_KEEPALIVE = 25
#: Where wireguard-go puts its control socket (the same path wg reads).
SOCKET_DIR = Path("/var/run/wireguard")
#: Seconds for wireguard-go to create its interface and control socket.
START_TIMEOUT = 10.0
#: Seconds for one `wg` / `ip` command.
COMMAND_TIMEOUT = 10.0
#: Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
MAX_INTERFACE_NAME = 15
_KEY_BYTES = 32


class TunnelError(NatsyncError):
    """The WireGuard tunnel could not be brought up or configured."""

    http_status = 502


def generate_private_key() -> str:
    """A new private key, base64 (what `wg genkey` prints)."""
    return base64.b64encode(X25519PrivateKey.generate().private_bytes_raw()).decode()


def public_key(private_key: str) -> str:
    """The public key of *private_key*, base64 (what `wg pubkey` prints)."""
    raw = _key_bytes(private_key, "private key")
    public = X25519PrivateKey.from_private_bytes(raw).public_key()
    return base64.b64encode(public.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def check_key(text: str, what: str) -> str:
    """*text* if it is a WireGuard key (32 bytes, base64); ConfigError naming *what* otherwise."""
    _key_bytes(text, what)
    return text


def _key_bytes(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"{what} is not a WireGuard key (base64 of 32 bytes)") from exc
    if len(raw) != _KEY_BYTES:
        raise ConfigError(f"{what} is not a WireGuard key (base64 of 32 bytes)")
    return raw


def read_private_key(path: Path) -> str:
    """The key in *path*, refusing a file others can read (a leaked key is a stolen tunnel)."""
    try:
        info = path.stat()
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the WireGuard key {path}: {exc}") from exc
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"the WireGuard key {path} can be read by others (mode {stat.S_IMODE(info.st_mode):o});"
            f" run `chmod 600 {path}`"
        )
    return check_key(text, f"the WireGuard key in {path}")


def write_private_key(path: Path, key: str) -> None:
    """Write *key* to *path*, readable by its owner only from the first byte on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(key + "\n")
    os.chmod(path, 0o600)


@dataclass(frozen=True, slots=True)
class Peer:
    """The other end of the tunnel."""

    public_key: str
    #: The addresses routed to this peer through the tunnel (its tunnel address, /32 or /128).
    allowed_ips: tuple[str, ...]
    #: Where to send to reach it ("host:port"); "" when it dials us (the relay's view of home).
    endpoint: str = ""
    #: Seconds between keepalives (0 = none); the end behind NAT sets it.
    keepalive: int = 0


@dataclass(frozen=True, slots=True)
class TunnelSpec:
    """One end of the tunnel: its interface, key, address and peer."""

    interface: str
    private_key: str
    #: This end's address inside the tunnel, with its prefix ("10.77.0.1/30").
    address: str
    peer: Peer
    #: UDP port to listen on (0: any, for the end that only dials out).
    listen_port: int = 0

    def __post_init__(self) -> None:
        """A spec is valid once made: ConfigError names the field that cannot work."""
        if not self.interface or len(self.interface) > MAX_INTERFACE_NAME or "/" in self.interface:
            raise ConfigError(
                f"tunnel interface name {self.interface!r} must be 1-{MAX_INTERFACE_NAME} "
                "characters without '/'"
            )
        check_key(self.private_key, "the tunnel's private key")
        check_key(self.peer.public_key, "the peer's public key")
        try:
            ipaddress.ip_interface(self.address)
            for allowed in self.peer.allowed_ips:
                ipaddress.ip_network(allowed, strict=False)
        except ValueError as exc:
            raise ConfigError(f"tunnel address: {exc}") from exc
        if not 0 <= self.listen_port <= 65535:
            raise ConfigError("tunnel listen_port must be 0..65535")


def render_setconf(spec: TunnelSpec) -> str:
    """The configuration text `wg setconf` reads (wg(8), CONFIGURATION FILE FORMAT)."""
    lines = ["[Interface]", f"PrivateKey = {spec.private_key}"]
    if spec.listen_port:
        lines.append(f"ListenPort = {spec.listen_port}")
    lines += ["", "[Peer]", f"PublicKey = {spec.peer.public_key}"]
    lines.append(f"AllowedIPs = {', '.join(spec.peer.allowed_ips)}")
    if spec.peer.endpoint:
        lines.append(f"Endpoint = {spec.peer.endpoint}")
    if spec.peer.keepalive:
        lines.append(f"PersistentKeepalive = {spec.peer.keepalive}")
    return "\n".join(lines) + "\n"


def tools_missing() -> list[str]:
    """The programs the tunnel needs that are not installed."""
    return [tool for tool in ("wireguard-go", "wg", "ip") if shutil.which(tool) is None]


class Tunnel:
    """A running userspace WireGuard interface: wireguard-go in the foreground, configured by wg.

    ``up()`` starts it, ``down()`` ends wireguard-go (by its PID), which removes the interface.
    """

    def __init__(self, spec: TunnelSpec) -> None:
        self.spec = spec
        self.process: asyncio.subprocess.Process | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def up(self) -> None:
        missing = tools_missing()
        if missing:
            raise TunnelError(
                f"the tunnel needs {', '.join(missing)}: `apt-get install wireguard-go "
                "wireguard-tools iproute2`"
            )
        name = self.spec.interface
        control = SOCKET_DIR / f"{name}.sock"
        if control.exists():
            with contextlib.suppress(OSError):
                control.unlink()  # left by a wireguard-go that was killed
        self.process = await asyncio.create_subprocess_exec(
            "wireguard-go", "-f", name,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"},
        )  # fmt: skip
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while not control.exists():
            if self.process.returncode is not None or loop.time() > deadline:
                err = b""
                if self.process.stderr is not None:
                    with contextlib.suppress(Exception):
                        err = await asyncio.wait_for(self.process.stderr.read(2000), 1)
                await self.down()
                raise TunnelError(
                    f"wireguard-go did not create {name}: "
                    f"{err.decode(errors='replace').strip()[-300:] or 'no control socket'}"
                )
            await asyncio.sleep(0.05)
        try:
            with tempfile.NamedTemporaryFile("w", prefix="natsync-wg-", delete=False) as conf:
                os.chmod(conf.name, 0o600)
                conf.write(render_setconf(self.spec))
            try:
                await _command("wg", "setconf", name, conf.name)
            finally:
                os.unlink(conf.name)
            await _command("ip", "address", "add", self.spec.address, "dev", name)
            await _command("ip", "link", "set", name, "up")
        except TunnelError:
            await self.down()
            raise
        peer = self.spec.peer
        keepalive = f", keepalive {peer.keepalive} s" if peer.keepalive else ""
        log.info("tunnel %s up at %s, peer %s%s", name, self.spec.address,
                 peer.endpoint or "(dials in)", keepalive)  # fmt: skip

    async def down(self) -> None:
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
            await process.wait()
        log.info("tunnel %s down", self.spec.interface)

    async def last_handshake(self) -> float:
        """Unix time of the last handshake with the peer (0: none yet), from `wg show`."""
        out = await _command("wg", "show", self.spec.interface, "latest-handshakes")
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == self.spec.peer.public_key:
                return float(parts[1])
        return 0.0


async def _command(*argv: str) -> str:
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        out, err = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        raise TunnelError(f"{' '.join(argv[:3])}: {exc}") from exc
    if process.returncode != 0:
        raise TunnelError(f"{' '.join(argv)}: {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace")
