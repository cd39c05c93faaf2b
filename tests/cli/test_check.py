"""`natsync check` and `natsync run` on broken deployments: each mistake of the table gives one
clear line naming the file, key or port (with its fix), exit 1, and never a traceback."""

from __future__ import annotations

import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from natsync.cli import main
from tests.cli.test_run import free_ports, init_file


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A directory with a file `natsync init` wrote (and its CA and certificates)."""
    tmp_path = tmp_path_factory.mktemp("check")
    path = init_file(tmp_path, free_ports(4))
    return tmp_path, path.read_text()


@pytest.fixture
def busy_port(base: tuple[Path, str]) -> Iterator[int]:
    """A port another program listens on — never one the file's parts would bind (a second
    server process binds server.port + 1, so neighbours of the file's ports are avoided)."""
    taken = {int(p) for p in re.findall(r"(?<![\d.])(\d{4,5})(?!\d)", base[1])}
    near = {p + d for p in taken for d in range(-2, 3)}
    held: list[socket.socket] = []
    try:
        while True:
            sock = socket.socket()
            held.append(sock)
            sock.bind(("127.0.0.1", 0))
            if int(sock.getsockname()[1]) not in near:
                break
        sock.listen()
        yield int(sock.getsockname()[1])
    finally:
        for each in held:
            each.close()


def _edit(text: str, key: str, value: str) -> str:
    """*text* with the first line setting *key* replaced by ``key = value``."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.split("=")[0].strip() == key:
            lines[i] = f"{key} = {value}"
            return "\n".join(lines) + "\n"
    raise AssertionError(f"{key} not in the file")


def _drop(text: str, key: str) -> str:
    kept = [line for line in text.splitlines() if line.split("=")[0].strip() != key]
    return "\n".join(kept) + "\n"


def _add(text: str, table: str, line: str) -> str:
    return text.replace(f"[{table}]\n", f"[{table}]\n{line}\n", 1)


#: (case, how the good file is broken, what the one line must say). "{d}" is the directory of
#: the file, "{busy}" a port another socket holds.
MISTAKES: list[tuple[str, object, str]] = [
    (
        "unknown table",
        lambda t: t + "[servr]\nport = 1\n",
        "unknown table [servr] (did you mean 'server'?)",
    ),
    (
        "unknown server key",
        lambda t: _add(t, "server", "prot = 1"),
        "unknown setting server.prot (did you mean 'port'?)",
    ),
    (
        "unknown edge key",
        lambda t: _add(t, "edge", "lisen = 'x:1'"),
        "unknown setting edge.lisen (did you mean 'listen'?)",
    ),
    (
        "unknown cert key",
        lambda t: _add(t, "cert", "mod = 'acme'"),
        "unknown setting cert.mod (did you mean 'mode'?)",
    ),
    (
        "table as a value",
        lambda t: "admin = 1\n" + t.replace("[admin]\n", "[adminx]\n"),
        "admin must be a table",
    ),
    ("not TOML", lambda t: t + "[run\n", "is not valid TOML"),
    (
        "port out of range",
        lambda t: _edit(t, "port", "70000"),
        "server.port must be 0..65535, not 70000",
    ),
    ("port as a string", lambda t: _edit(t, "port", '"9443"'), "server.port must be an integer"),
    (
        "heartbeats crossed",
        lambda t: _add(t, "server", "heartbeat_min = 600\nheartbeat_max = 300"),
        "server.heartbeat_min must be >= 1 and <= server.heartbeat_max",
    ),
    (
        "domains not a list",
        lambda t: _edit(t, "domains", '"natsync.test"'),
        "server.domains must be a list of strings",
    ),
    (
        "unknown store scheme",
        lambda t: _edit(t, "store", '"mysql://db/natsync"'),
        "server.store has an unknown scheme 'mysql'",
    ),
    (
        "smarthost without port",
        lambda t: _edit(t, "smarthost", '"relay.example.org"'),
        "server.smarthost must be host:port",
    ),
    (
        "proxy not an address",
        lambda t: _edit(t, "trusted_proxies", '["edge"]'),
        "server.trusted_proxies has 'edge': an IP address is needed",
    ),
    (
        "missing certificate",
        lambda t: _edit(t, "tls_cert", '"{d}/nothere.pem"'),
        "nothere.pem does not exist",
    ),
    (
        "missing key",
        lambda t: _edit(t, "tls_key", '"{d}/nothere.key"'),
        "nothere.key does not exist",
    ),
    (
        "key of another certificate",
        lambda t: _edit(t, "key", '"{d}/data/tls/server.key"'),
        "does not belong to the certificate",
    ),
    (
        "not a PEM certificate",
        lambda t: _edit(t, "cert", '"{d}/natsync.toml"'),
        "are not a PEM certificate and key",
    ),
    (
        "certificate for another name",
        lambda t: _edit(t, "public_name", '"mail.other.test"'),
        "no certificate names mail.other.test",
    ),
    (
        "port in use",
        lambda t: _edit(t, "listen", '"127.0.0.1:{busy}"'),
        "port {busy} (edge.listen = '127.0.0.1:{busy}'): another program listens there already",
    ),
    (
        "two listeners on one port",
        lambda t: _edit(t, "smtp_listen", '"127.0.0.1:{edge_port}"'),
        "both server.smtp_listen and edge.listen use it",
    ),
    (
        "address not on this machine",
        lambda t: _edit(t, "listen", '"192.0.2.1:8443"'),
        "192.0.2.1 is not an address of this machine",
    ),
    (
        "admin listen not host:port",
        lambda t: t.replace('listen = "127.0.0.1:' + "{admin_port}" + '"', 'listen = "nowhere"'),
        "admin.listen must be host:port",
    ),
    (
        "edge cannot verify the server",
        lambda t: _drop(t, "backend_ca"),
        "the edge cannot verify the server",
    ),
    (
        "backend CA missing",
        lambda t: _edit(t, "backend_ca", '"{d}/none/ca.pem"'),
        "none/ca.pem does not exist",
    ),
    (
        "bad backend pin",
        lambda t: _add(t, "edge", 'backend_pin = "sha256:zz"'),
        "edge.backend_pin must look like sha256:AB:CD:...",
    ),
    (
        "edge listen garbage",
        lambda t: _edit(t, "listen", '"nonsense"'),
        "edge.listen must be host:port, not 'nonsense'",
    ),
    ("edge workers zero", lambda t: _edit(t, "workers", "0"), "edge.workers must be 1..64"),
    (
        "no edge certificate",
        lambda t: t.split("[[edge.certificates]]")[0] + "[cert]" + t.split("[cert]")[1],
        "the edge has no certificate to show phones",
    ),
    (
        "log format",
        lambda t: _edit(t, "log_format", '"xml"'),
        "run.log_format must be text or json, not 'xml'",
    ),
    (
        "no server process",
        lambda t: _edit(t, "server_processes", "0"),
        "run.server_processes must be 1..64",
    ),
    (
        "processes on SQLite",
        lambda t: _edit(t, "server_processes", "2"),
        "2 server processes on the SQLite store",
    ),
    (
        "cert mode",
        lambda t: _edit(t, "mode", '"letsencrypt"'),
        "cert.mode must be one of acme, private-ca, files, not 'letsencrypt'",
    ),
    (
        "old and new name of one cert key",
        lambda t: _add(t, "cert", 'acme_directory = "staging"\ndirectory = "staging"'),
        "cert.acme_directory is the old name of cert.directory: keep only directory",
    ),
    (
        "dns-01 without a DNS updater",
        lambda t: _add(_edit(t, "mode", '"acme"'), "cert", 'challenge = "dns-01"'),
        "cert.challenge = dns-01: no [ddns] table",
    ),
    (
        "portmap mapping",
        lambda t: t + '[portmap]\nmappings = ["99999/tcp"]\n',
        "portmap.mappings: mapping '99999/tcp' is not PORT[:INTERNAL][/tcp|udp]",
    ),
    (
        "ddns name outside zone",
        lambda t: (
            t
            + '[ddns]\nserver = "127.0.0.1:53"\nzone = "example.org"\nnames = ["mail.other.org"]\n'
        ),
        "ddns.names: mail.other.org is not inside ddns.zone example.org",
    ),
    (
        "ddns key missing",
        lambda t: (
            t
            + '[ddns]\nserver = "127.0.0.1:53"\nzone = "natsync.test"\n'
            + 'names = ["localhost.natsync.test"]\nkey_file = "{d}/tsig.key"\n'
        ),
        "tsig.key does not exist",
    ),
    ("garbage store file", "garbage-store", "cannot be read as a natsync store"),
    (
        "data directory under a file",
        lambda t: _edit(t, "data_dir", '"{d}/natsync.toml/data"'),
        "natsync.toml is not a directory this user",
    ),
    ("no such file", "missing-file", "cannot read config file"),
]


def _broken(base: tuple[Path, str], tmp_path: Path, how: object, busy: int) -> Path:
    directory, good = base
    work = tmp_path / "deploy"
    shutil.copytree(directory, work)
    text = good.replace(str(directory), str(work))
    edge_port = text.split("\n[edge]\n")[1].split('listen = "127.0.0.1:')[1].split('"')[0]
    admin_port = text.split("[admin]")[1].split('listen = "127.0.0.1:')[1].split('"')[0]
    path = work / "natsync.toml"
    if how == "missing-file":
        return work / "nothere.toml"
    if how == "garbage-store":
        (work / "data" / "natsync.db").write_bytes(b"this is not a database" * 100)
    else:
        assert callable(how)
        text = how(text.replace(admin_port, "{admin_port}")).replace("{admin_port}", admin_port)
    text = text.replace("{d}", str(work)).replace("{busy}", str(busy))
    path.write_text(text.replace("{edge_port}", edge_port), encoding="utf-8")
    return path


def test_the_table_has_thirty_mistakes_at_least() -> None:
    assert len(MISTAKES) >= 30
    assert len({case for case, _, _ in MISTAKES}) == len(MISTAKES)


def test_the_good_file_passes(base: tuple[Path, str]) -> None:
    directory, _ = base
    result = CliRunner().invoke(main, ["check", "-c", str(directory / "natsync.toml")])
    assert result.exit_code == 0, result.output
    assert "is ready to run" in result.output


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize(("case", "how", "needle"), MISTAKES, ids=[m[0] for m in MISTAKES])
def test_a_mistake_gives_one_clear_line(
    base: tuple[Path, str], tmp_path: Path, busy_port: int, command: str, case: str,
    how: object, needle: str,
) -> None:  # fmt: skip
    path = _broken(base, tmp_path, how, busy_port)
    result = CliRunner().invoke(main, [command, "-c", str(path)])
    output = result.output
    assert result.exit_code == 1, f"{case}: {output}"
    assert result.exception is None or isinstance(result.exception, SystemExit), case
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if ": error: " in line or "Error: " in line]
    assert len(errors) == 1, f"{case}: {output}"
    assert needle.replace("{busy}", str(busy_port)) in errors[0], f"{case}: {output}"
    if command == "run":
        assert "nothing started" in output or "cannot read config file" in output
