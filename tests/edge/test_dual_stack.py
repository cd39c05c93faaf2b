"""`listen = "*:443"`: the edge on every address of both families (phones on mobile networks
mostly have IPv6; behind carrier-grade NAT only IPv6 reaches home). The edge's own listener is
checked inside a network namespace of its own (so a wildcard bind touches nothing of the host);
the rendered nginx and HAProxy configurations say the same in their own words and pass their
own checks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from natsync.edge.config import SiteCert
from natsync.edge.render import render_config, split_nginx
from natsync.lab.runner import NATSYNC
from tests.edge.conftest import PUBLIC_NAME, Pki, edge_config
from tests.edge.test_render import HAPROXY, NGINX

PORT = 18443
HTTP_PORT = 18080
LAN4, LAN6 = "192.168.77.2", "2001:db8:77::2"
ROOT = Path(__file__).resolve().parents[2]


def test_rendered_nginx_and_haproxy_listen_on_both_families(tmp_path: Path, pki: Pki) -> None:
    config = edge_config(pki, 8443, backend_ca=pki.ca_file, backend_pin="", listen=f"*:{PORT}")
    main, include = split_nginx(render_config("nginx", config, runtime_dir=tmp_path))
    assert f"listen {PORT} ssl default_server;" in main
    assert f"listen [::]:{PORT} ssl default_server;" in main
    (tmp_path / "nginx.conf").write_text(main)
    (tmp_path / "natsync-proxy.inc").write_text(include)
    checked = subprocess.run(
        [NGINX, "-t", "-q", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
         "-e", str(tmp_path / "error.log")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    cert = tmp_path / "edge.pem"
    shutil.copy(pki.edge_cert, cert)
    shutil.copy(pki.edge_key, tmp_path / "edge.pem.key")  # HAProxy reads <cert>.key
    config = replace(config, certificates=(SiteCert((PUBLIC_NAME,), cert, pki.edge_key),))
    haproxy = render_config("haproxy", config, runtime_dir=tmp_path)
    assert f"bind :::{PORT} v4v6 ssl" in haproxy
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(haproxy)
    checked = subprocess.run(
        [HAPROXY, "-c", "-q", "-f", str(cfg)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="a namespace needs root (CI runs as root)")
def test_the_edge_on_star_answers_over_ipv4_and_ipv6(tmp_path: Path, pki: Pki) -> None:
    namespace = f"nsedge-{uuid.uuid4().hex[:6]}"
    config = tmp_path / "edge.toml"
    config.write_text(f"""[edge]
listen = "*:{PORT}"
http_listen = "*:{HTTP_PORT}"
backend = "127.0.0.1:9"
backend_name = "server.internal"
backend_ca = "{pki.ca_file}"
admin_listen = ""
forwards = []

[[edge.certificates]]
names = ["{PUBLIC_NAME}"]
cert = "{pki.edge_cert}"
key = "{pki.edge_key}"
""")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        subprocess.run(["ip", "-n", namespace, "link", "set", "lo", "up"], check=True)
        # addresses beyond loopback (a veth whose ends are both in the namespace), so a
        # listener on loopback only would not pass
        for command in (
            ["link", "add", "v0", "type", "veth", "peer", "name", "v1"],
            ["link", "set", "v0", "up"],
            ["link", "set", "v1", "up"],
            ["addr", "add", f"{LAN4}/24", "dev", "v0"],
            ["-6", "addr", "add", f"{LAN6}/64", "dev", "v0", "nodad"],
        ):
            subprocess.run(["ip", "-n", namespace, *command], check=True)
        with (tmp_path / "edge.log").open("wb") as log:
            edge = subprocess.Popen(
                ["ip", "netns", "exec", namespace, *NATSYNC, "edge", "run", "--config",
                 str(config)],
                stdout=subprocess.DEVNULL, stderr=log, env=env,
            )  # fmt: skip
        try:
            probe = (
                "import socket, ssl, sys, time\n"
                f"ctx = ssl.create_default_context(cafile={str(pki.ca_file)!r})\n"
                "out = []\n"
                f"for host in ('127.0.0.1', '::1', '{LAN4}', '{LAN6}'):\n"
                "    for _ in range(100):\n"
                "        try:\n"
                f"            raw = socket.create_connection((host, {PORT}), timeout=2)\n"
                "            break\n"
                "        except OSError:\n"
                "            time.sleep(0.1)\n"
                f"    tls = ctx.wrap_socket(raw, server_hostname={PUBLIC_NAME!r})\n"
                "    tls.sendall(b'GET /Microsoft-Server-ActiveSync HTTP/1.1\\r\\n"
                f"Host: {PUBLIC_NAME}\\r\\nConnection: close\\r\\n\\r\\n')\n"
                "    out.append(host + ' ' + tls.recv(12).decode())\n"
                f"    plain = socket.create_connection((host, {HTTP_PORT}), timeout=2)\n"
                "    plain.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\n'\n"
                "                  b'Connection: close\\r\\n\\r\\n')\n"
                "    out.append(host + ' ' + plain.recv(12).decode())\n"
                "print('|'.join(out))\n"
            )
            done = subprocess.run(
                ["ip", "netns", "exec", namespace, sys.executable, "-c", probe],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            answers = done.stdout.strip().split("|")
            assert len(answers) == 8, done.stderr + (tmp_path / "edge.log").read_text()
            for i, host in enumerate(("127.0.0.1", "::1", LAN4, LAN6)):
                assert answers[2 * i].startswith(f"{host} HTTP/1.1 ")  # TLS, the edge
                assert answers[2 * i + 1].startswith(f"{host} HTTP/1.1 30")  # port 80: to HTTPS
        finally:
            edge.terminate()
            edge.wait(10)
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=False)
