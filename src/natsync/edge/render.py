"""``natsync edge render nginx|haproxy``: the edge's configuration for sites that prefer those.

Both renderings keep what makes the edge safe, and each avoids its server's known trap (see
docs/edge.md "nginx and HAProxy"):

* **nginx** does not verify the server's certificate unless told (``proxy_ssl_verify on`` +
  ``proxy_ssl_trusted_certificate``), sends no SNI unless ``proxy_ssl_server_name on``, sends the
  upstream's address as Host unless ``proxy_set_header Host $http_host``, cuts a held Ping after
  ``proxy_read_timeout`` (default 60 s → 504) and buffers responses unless ``proxy_buffering off``.
  All locations verify the same way, so its shared TLS session cache cannot mix a verified and an
  unverified session (the case where ``proxy_ssl_session_reuse off`` is needed).
* **HAProxy** needs ``verify required ca-file`` (it refuses ``ssl`` without a CA anyway),
  ``sni str(name)`` and ``verifyhost``, and ``timeout server`` above the heartbeat.

Neither can pin a certificate by fingerprint: they verify against a CA file, so rendering needs
``backend_ca`` (for natsync's own private CA: its ``ca.pem``). The pin stays the edge's own check.
"""

# ruff: noqa: E501  (the templates are read as configuration files, line by line)
from __future__ import annotations

import re
from pathlib import Path

from natsync.edge.config import ALL_ADDRESSES, EdgeConfig, split_hostport
from natsync.edge.tls import CIPHERS, same_names
from natsync.errors import ConfigError

#: Connections per nginx worker / HAProxy process (the machine's open-files limit is 20,000).
MAX_CONNECTIONS = 10_000
#: HAProxy's maxconn: it needs two descriptors per connection plus a few dozen of its own, and
#: refuses to start when that exceeds the open-files limit (20,000 here).
HAPROXY_MAXCONN = 9_900


def _path_regex(path: str) -> str:
    """A case-insensitive regex for one publishing rule (prefix when it ends with '/')."""
    escaped = re.escape(path)
    return f"^{escaped}" if path.endswith("/") else f"^{escaped}/?$"


def _require_ca(config: EdgeConfig) -> Path:
    if config.backend_ca is None:
        raise ConfigError(
            "nginx and HAProxy cannot pin a certificate fingerprint; set edge.backend_ca to the "
            "CA file that issued the server's certificate (natsync's private CA: ca/ca.pem) "
            "so the rendered configuration verifies the server"
        )
    return config.backend_ca


def _nginx_upstream(config: EdgeConfig) -> str:
    """One server as before; several: least_conn and passive checks (open-source nginx has no
    active ones), a failed server left alone for as long as the edge's own bound."""
    if len(config.servers) == 1:
        return f"        server {config.backend};\n"
    fail_timeout = max(1, round(config.out_within))
    lines = ["        least_conn;\n"]
    lines += [
        f"        server {address} max_fails=1 fail_timeout={fail_timeout}s;\n"
        for address in config.servers
    ]
    return "".join(lines)


def render_nginx(config: EdgeConfig, runtime_dir: Path | None = None) -> str:
    ca = _require_ca(config)
    if not config.certificates:
        raise ConfigError("edge.certificates is empty: nothing to serve TLS with")
    rt = runtime_dir or Path("/run/natsync-nginx")
    host, port = split_hostport(config.listen, "edge.listen")
    if host == ALL_ADDRESSES:  # nginx: "listen 443" is IPv4 only; IPv6 needs its own line
        listens = [str(port), f"[::]:{port}"]
    else:
        listens = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    timeout = int(config.read_timeout)
    locations = []
    for path in config.paths:
        locations.append(
            f"        location ~* {_path_regex(path)} {{\n"
            "            include natsync-proxy.inc;\n"
            "        }\n"
        )
    proxy = "\n".join(
        [
            "proxy_pass https://natsync_backend;",
            "proxy_http_version 1.1;",
            'proxy_set_header Connection "";',
            "proxy_set_header Host $http_host;",
            "proxy_set_header X-Forwarded-For $remote_addr;",
            "proxy_set_header X-Forwarded-Proto https;",
            'proxy_set_header Forwarded "";',
            'proxy_set_header X-Real-IP "";',
            "proxy_ssl_verify on;",
            f"proxy_ssl_trusted_certificate {ca};",
            "proxy_ssl_verify_depth 3;",
            "proxy_ssl_server_name on;",
            f"proxy_ssl_name {config.server_name};",
            "proxy_ssl_protocols TLSv1.2 TLSv1.3;",
            "proxy_ssl_session_reuse on;",
            "proxy_connect_timeout 1s;",
            f"proxy_read_timeout {timeout}s;",
            f"proxy_send_timeout {timeout}s;",
            "proxy_buffering off;",
            "proxy_request_buffering off;",
            # a failed connect (no byte of the request sent) goes to the next server
            "proxy_next_upstream error timeout;",
            f"proxy_next_upstream_tries {len(config.servers)};",
            "",
        ]
    )
    servers = []
    # certificates for the same names: one server with each (ECDSA and RSA, nginx choosing)
    for index, group in enumerate(same_names(config.certificates)):
        names = " ".join(group[0].names) or "_"
        default = " default_server" if index == 0 else ""
        servers.append(
            "    server {\n"
            + "".join(f"        listen {listen} ssl{default};\n" for listen in listens)
            + f"        server_name {names};\n"
            + "".join(
                f"        ssl_certificate {site.cert};\n        ssl_certificate_key {site.key};\n"
                for site in group
            )
            + "".join(locations)
            + "        location / {\n            return 404;\n        }\n    }\n"
        )
    rate = max(1, int(config.requests_per_second_per_ip))
    return f"""# Rendered by `natsync edge render nginx`: SSL bridging with verification toward the server.
# Keep natsync-proxy.inc (below, after the marker line) next to this file.
worker_processes auto;
pid {rt}/nginx.pid;
error_log {rt}/error.log warn;
worker_rlimit_nofile {2 * MAX_CONNECTIONS};
events {{
    worker_connections {MAX_CONNECTIONS};
}}
http {{
    access_log off;
    client_body_temp_path {rt}/client_body;
    proxy_temp_path {rt}/proxy;
    fastcgi_temp_path {rt}/fastcgi;
    uwsgi_temp_path {rt}/uwsgi;
    scgi_temp_path {rt}/scgi;
    server_tokens off;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers {CIPHERS};
    ssl_prefer_server_ciphers off;
    ssl_session_cache shared:natsync:10m;
    client_max_body_size {config.max_body};
    client_header_timeout {int(config.header_timeout)}s;
    keepalive_timeout {int(config.client_idle_timeout)}s;
    large_client_header_buffers 4 16k;
    underscores_in_headers off;
    limit_conn_zone $binary_remote_addr zone=natsync_conn:10m;
    limit_req_zone $binary_remote_addr zone=natsync_req:10m rate={rate}r/s;
    limit_conn natsync_conn {config.max_connections_per_ip};
    limit_req zone=natsync_req burst={config.request_burst_per_ip} nodelay;
    limit_conn_status 503;
    limit_req_status 503;
    upstream natsync_backend {{
{_nginx_upstream(config)}        keepalive {config.pool_size};
        keepalive_timeout 30s;
    }}
{"".join(servers)}}}
# ---- natsync-proxy.inc ----
{proxy}"""


def split_nginx(text: str) -> tuple[str, str]:
    """The rendered text as (nginx.conf, natsync-proxy.inc)."""
    main, _, include = text.partition("# ---- natsync-proxy.inc ----\n")
    return main, include


def _haproxy_backend(config: EdgeConfig, ca: Path) -> str:
    """The backend section: one server as before; several with leastconn, active checks
    (OPTIONS health_path, any answer below 500), passive ones (observe layer4) and redispatch."""
    name = config.server_name
    tls = f"ssl verify required ca-file {ca} sni str({name}) verifyhost {name} check-sni {name}"
    if len(config.servers) == 1:
        return f"    http-reuse safe\n    server natsync {config.backend} {tls}\n"
    inter = max(100, round(config.health_interval * 1000))
    check = (
        f"check inter {inter}ms fall {config.health_fall} rise {config.health_rise} "
        "observe layer4 error-limit 1 on-error mark-down"
    )
    lines = [
        "    http-reuse safe",
        "    balance leastconn",
        "    option redispatch 1",
        f"    retries {len(config.servers)}",
        f"    timeout check {max(100, round(config.health_timeout * 1000))}ms",
        "    option httpchk",
        f"    http-check send meth OPTIONS uri {config.health_path} ver HTTP/1.1 hdr Host {name}",
        "    http-check expect rstatus ^[1-4]",
    ]
    lines += [
        f"    server natsync{i} {address} {tls} {check}"
        for i, address in enumerate(config.servers, 1)
    ]
    return "\n".join(lines) + "\n"


def render_haproxy(config: EdgeConfig, runtime_dir: Path | None = None) -> str:
    ca = _require_ca(config)
    if not config.certificates:
        raise ConfigError("edge.certificates is empty: nothing to serve TLS with")
    host, port = split_hostport(config.listen, "edge.listen")
    # HAProxy: ":::443 v4v6" is one socket for both families; "*:443" would be IPv4 only
    bind = f":::{port} v4v6" if host == ALL_ADDRESSES else f"{host}:{port}"
    timeout = int(config.read_timeout)
    crts = " ".join(f"crt {site.cert}" for site in config.certificates)
    acls = "\n".join(f"    acl published path_reg -i {_path_regex(path)}" for path in config.paths)
    stats = f"    stats socket {runtime_dir}/haproxy.sock\n" if runtime_dir else ""
    return f"""# Rendered by `natsync edge render haproxy`: SSL bridging with verification toward the server.
# HAProxy reads each certificate's key from "<cert>.key" when the certificate file has none
# (ssl-load-extra-files): link it, e.g. ln -s mail.key mail.pem.key
global
    maxconn {HAPROXY_MAXCONN}
{stats}    ssl-default-bind-options ssl-min-ver TLSv1.2
    ssl-default-bind-ciphers {CIPHERS}
    ssl-default-server-options ssl-min-ver TLSv1.2
    ssl-load-extra-files key

defaults
    mode http
    option http-keep-alive
    timeout connect 1s
    timeout client {int(config.client_idle_timeout)}s
    timeout http-request {int(config.header_timeout)}s
    timeout http-keep-alive {int(config.client_idle_timeout)}s
    timeout server {timeout}s
    timeout tunnel {timeout}s

frontend natsync_edge
    bind {bind} ssl {crts} alpn http/1.1
    stick-table type ip size 100k expire 60s store conn_cur,http_req_rate(1s)
    tcp-request connection track-sc0 src
    http-request return status 503 hdr Retry-After 5 if {{ sc_conn_cur(0) gt {config.max_connections_per_ip} }}
    http-request return status 503 hdr Retry-After 5 if {{ sc_http_req_rate(0) gt {config.request_burst_per_ip} }}
{acls}
    http-request return status 404 unless published
    http-request del-header Forwarded
    http-request del-header X-Real-IP
    http-request set-header X-Forwarded-For %[src]
    http-request set-header X-Forwarded-Proto https
    http-request set-var(req.body_max) int({config.max_body})
    http-request deny deny_status 413 if {{ req.hdr_val(content-length) gt {config.max_body} }}
    default_backend natsync_server

backend natsync_server
{_haproxy_backend(config, ca)}"""


def render_config(kind: str, config: EdgeConfig, runtime_dir: Path | None = None) -> str:
    if kind == "nginx":
        return render_nginx(config, runtime_dir)
    if kind == "haproxy":
        return render_haproxy(config, runtime_dir)
    raise ConfigError(f"cannot render {kind!r}: choose nginx or haproxy")
