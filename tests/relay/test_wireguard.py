"""WireGuard keys and configuration, checked against the real wireguard-tools: `wg pubkey`
agrees with our public keys, and `wg setconf` on a real wireguard-go interface takes what we
render."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from natsync.errors import ConfigError
from natsync.relay.wireguard import (
    Peer,
    TunnelSpec,
    generate_private_key,
    public_key,
    read_private_key,
    render_setconf,
    write_private_key,
)

needs_wg = pytest.mark.skipif(
    shutil.which("wg") is None, reason="wireguard-tools not installed (make test installs it)"
)


@needs_wg
def test_public_key_is_what_wg_pubkey_says() -> None:
    for _ in range(3):
        private = generate_private_key()
        done = subprocess.run(
            ["wg", "pubkey"], input=private + "\n", capture_output=True, text=True, check=True
        )
        assert public_key(private) == done.stdout.strip()


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "relay.key"
    write_private_key(key, generate_private_key())
    assert (key.stat().st_mode & 0o777) == 0o600
    assert read_private_key(key)
    key.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_private_key(key)


@pytest.mark.parametrize("text", ["", "not base64!", "c2hvcnQ=", "A" * 44])
def test_what_is_not_a_key_is_refused(tmp_path: Path, text: str) -> None:
    key = tmp_path / "k"
    key.write_text(text)
    key.chmod(0o600)
    with pytest.raises(ConfigError, match="not a WireGuard key"):
        read_private_key(key)


def _spec(interface: str = "natsync0", **kw: object) -> TunnelSpec:
    peer = Peer(public_key(generate_private_key()), ("10.77.0.1/32",), "192.0.2.1:51820", 25)
    base: dict[str, object] = {
        "interface": interface,
        "private_key": generate_private_key(),
        "address": "10.77.0.2/30",
        "peer": peer,
    }
    base.update(kw)
    return TunnelSpec(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"interface": "a-name-that-is-too-long"}, "interface name"),
        ({"interface": "a/b"}, "interface name"),
        ({"address": "10.77.0.999/30"}, "tunnel address"),
        ({"private_key": "nope"}, "private key"),
        ({"listen_port": 70000}, "listen_port"),
    ],
)
def test_a_tunnel_spec_checks_itself(kw: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        _spec(**kw)


@needs_wg
@pytest.mark.skipif(os.geteuid() != 0, reason="an interface needs root (CI runs as root)")
def test_wg_setconf_takes_the_rendered_configuration(tmp_path: Path) -> None:
    namespace = f"nsrelay-{uuid.uuid4().hex[:6]}"
    interface = f"nsw{uuid.uuid4().hex[:6]}"
    spec = _spec(interface, listen_port=51999)
    conf = tmp_path / "wg.conf"
    conf.write_text(render_setconf(spec))
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    go = subprocess.Popen(
        ["ip", "netns", "exec", namespace, "wireguard-go", "-f", interface],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        socket = Path(f"/var/run/wireguard/{interface}.sock")
        for _ in range(200):
            if socket.exists():
                break
            subprocess.run(["sleep", "0.05"], check=True)
        subprocess.run(
            ["ip", "netns", "exec", namespace, "wg", "setconf", interface, str(conf)], check=True
        )
        shown = subprocess.run(
            ["ip", "netns", "exec", namespace, "wg", "showconf", interface],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert f"PrivateKey = {spec.private_key}" in shown
        assert "ListenPort = 51999" in shown
        assert f"PublicKey = {spec.peer.public_key}" in shown
        assert "AllowedIPs = 10.77.0.1/32" in shown
        assert "Endpoint = 192.0.2.1:51820" in shown
        assert "PersistentKeepalive = 25" in shown
    finally:
        go.terminate()
        go.wait(10)
        subprocess.run(["ip", "netns", "del", namespace], check=False)
