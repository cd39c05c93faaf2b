"""`natsync ddns update/status/txt` with a provider picked in the file or on the command line:
a dyndns2 stand-in writing into a real BIND, the address from a real HTTP echo service."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from natsync.cli import main
from tests.ddns.fake_dyndns2 import Dyndns2Server
from tests.ddns.fake_http import BindZone, Running, serve
from tests.ddns.servers import ACME_OWNER, Echo, Named, dig_values


@pytest.fixture
def world(named_txt: Named, tmp_path: Path) -> Iterator[tuple[Named, Dyndns2Server, Running]]:
    provider = Dyndns2Server(
        BindZone(named_txt.server()), "alice", "s3cret", {"eas.example.test", "mail.example.test"}
    )
    with serve(provider, tmp_path / "tls") as running:
        yield named_txt, provider, running


def config(tmp_path: Path, named: Named, running: Running, url: str, password: str) -> Path:
    (tmp_path / "dyn.password").write_text(password)
    path = tmp_path / "natsync.toml"
    path.write_text(f"""
[server]
data_dir = "data"
[ddns]
provider = "dyndns2"
server = "{named.address}"
zone = "example.test"
key_file = "{named.key_file}"
names = ["eas.example.test", "mail.example.test"]
sources = ["echo"]
echo_urls = ["{url}"]
families = [4]
confirm_servers = ["{named.address}"]
confirm_timeout = 2
[ddns.dyndns2]
url = "{running.url}/nic/update"
username = "alice"
password_file = "dyn.password"
ca_file = "{running.ca_file}"
""")
    return path


def test_update_through_dyndns2_then_status_and_a_stop(
    world: tuple[Named, Dyndns2Server, Running], echo: tuple[str, type[Echo]], tmp_path: Path
) -> None:
    named, provider, running = world
    url, _ = echo
    path = config(tmp_path, named, running, url, "s3cret")
    runner = CliRunner()
    result = runner.invoke(main, ["ddns", "update", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert (
        "mail.example.test A: updated 192.0.2.1 -> 192.0.3.10 (TTL 60): phones and resolvers "
        "that looked it up before may keep 192.0.2.1 for up to 300 s" in result.output
    )
    assert dig_values(named, "eas.example.test") == {"192.0.3.10"}
    assert len(provider.updates()) == 2
    status = runner.invoke(main, ["ddns", "status", "--config", str(path), "--json"])
    state = json.loads(status.output)
    assert state["provider"] == "dyndns2"
    assert {n["name"]: (n["published"], n["ttl"]) for n in state["names"]} == {
        "eas.example.test": (["192.0.3.10"], 60),
        "mail.example.test": (["192.0.3.10"], 60),
    }
    # the provider starts refusing the password: the run stops and status says so
    provider.password = "changed"
    Echo.address = "192.0.3.11"
    failed = runner.invoke(main, ["ddns", "update", "--config", str(path)])
    assert failed.exit_code == 1
    assert "username and password are not accepted" in failed.output
    status = runner.invoke(main, ["ddns", "status", "--config", str(path)])
    assert "dyndns2: STOPPED until the configuration changes" in status.output
    # the same update through RFC 2136 instead, chosen on the command line
    rfc = runner.invoke(main, ["ddns", "update", "--config", str(path), "--provider", "rfc2136"])
    assert rfc.exit_code == 0, rfc.output
    assert dig_values(named, "mail.example.test") == {"192.0.3.11"}


def test_txt_command(
    world: tuple[Named, Dyndns2Server, Running], echo: tuple[str, type[Echo]], tmp_path: Path
) -> None:
    named, _provider, running = world
    url, _ = echo
    path = config(tmp_path, named, running, url, "s3cret")
    runner = CliRunner()
    owner = ACME_OWNER
    refused = runner.invoke(main, ["ddns", "txt", "--config", str(path), owner, "v1"])
    assert refused.exit_code == 1
    assert "cannot set TXT records" in refused.output
    args = ["ddns", "txt", "--config", str(path), "--provider", "rfc2136", owner, "v1"]
    added = runner.invoke(main, args)
    assert added.exit_code == 0, added.output
    assert dig_values(named, owner, "TXT") == {'"v1"'}
    removed = runner.invoke(main, [*args[:-2], "--remove", owner, "v1"])
    assert removed.exit_code == 0, removed.output
    assert dig_values(named, owner, "TXT") == set()
