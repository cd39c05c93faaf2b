"""The one ``[cert]`` table (natsync.cert.settings): the home user's keys, the old keys of
`natsync run` still read (and refused beside their new name), what [cert] asks of [ddns], the
file `natsync init` writes, and `natsync cert acme -c FILE` reading the same table as
`natsync run` — against pebble, DNS-01 through the file's [ddns] into BIND."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from natsync.cert.settings import RENAMED, CertSettings, parse_cert_table
from natsync.cli import main
from natsync.deployment import deployment_from_dict, load_deployment
from natsync.errors import ConfigError
from natsync.run.parts import manager_settings
from tests.cert.acme_servers import ZONE, Bind, Pebble


def test_the_home_user_writes_the_name_and_nothing_else(tmp_path: Path) -> None:
    deployment = deployment_from_dict({"cert": {"name": "Mail.Example.com."}}, tmp_path / "f")
    cert = deployment.cert
    assert cert is not None
    assert (cert.mode, cert.names, cert.directory, cert.challenge) == (
        "acme",
        ("mail.example.com",),
        "production",
        "auto",
    )
    assert cert.reachable == (None, None)
    settings = manager_settings(deployment)  # what natsync run's cert part runs on
    assert settings.names == ("mail.example.com",)
    assert settings.directory == "production"
    assert settings.cert_path == deployment.server.data_dir / "tls" / "public.pem"


def test_the_old_keys_of_natsync_run_still_work(tmp_path: Path) -> None:
    old = parse_cert_table(
        {
            "mode": "acme",
            "names": ["a.example.com"],
            "acme_directory": "https://ca.test/dir",
            "acme_email": "ops@example.com",
            "acme_ca": "pebble.pem",
        },
        tmp_path,
    )
    assert old.directory == "https://ca.test/dir"
    assert old.email == "ops@example.com"
    assert old.ca_file == tmp_path / "pebble.pem"
    assert old.renamed == ("acme_ca", "acme_directory", "acme_email")
    for key, new in RENAMED.items():
        with pytest.raises(ConfigError, match=f"cert.{key} is the old name of cert.{new}"):
            parse_cert_table({"name": "a.example.com", key: "x", new: "y"})


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ({"name": "a.example.com", "names": ["b.example.com"]}, "not both"),
        ({"mode": "letsencrypt", "name": "a.example.com"}, "cert.mode must be one of"),
        ({"name": "a.example.com", "challenge": "http-02"}, "cert.challenge must be one of"),
        ({"name": "a.example.com", "ports_open": "22"}, "cert.ports_open"),
        ({"name": "a.example.com", "http_listen": "80"}, "cert.http_listen must be host:port"),
        ({"name": "a.example.com", "ca_file": ""}, "cert.ca_file must be a path"),
        ({"name": 5}, "cert.name must be the public name"),
    ],
)
def test_mistakes_name_the_key(table: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_cert_table(table)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"mode": "letsencrypt"}, "cert.mode must be one of"),
        ({"names": ()}, "cert.name: the public name to certify"),
        ({"directory": "ftp://ca.test/dir"}, "cert.directory"),
        ({"challenge": "http-02"}, "cert.challenge must be one of"),
        ({"ports_open": "22"}, "cert.ports_open"),
        ({"key": "dsa"}, "cert.key must be one of"),
        ({"http_listen": "80"}, "cert.http_listen must be host:port"),
    ],
)
def test_settings_are_valid_when_constructed(changes: dict[str, object], match: str) -> None:
    """Not only the parser: CertSettings itself refuses what cannot work (``__post_init__``),
    made directly or by ``replace`` on good settings."""
    good = CertSettings(names=("a.example.com",))
    assert good.mode == "acme"
    assert good.reachable == (None, None)
    with pytest.raises(ConfigError, match=match):
        CertSettings(**{"names": ("a.example.com",), **changes})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=match):
        replace(good, **changes)  # type: ignore[arg-type]


def test_files_mode_needs_no_name() -> None:
    assert parse_cert_table({"mode": "files"}).names == ()


def _ddns(provider: str = "rfc2136", **extra: object) -> dict[str, object]:
    table: dict[str, object] = {
        "server": "127.0.0.1:53",
        "zone": "example.com",
        "names": ["mail.example.com"],
        "provider": provider,
    }
    if provider == "dyndns2":
        table["dyndns2"] = {"url": "https://dyn.test/nic/update", "username": "u", "password": "p"}
    table.update(extra)
    return table


def test_dns01_asks_ddns_for_a_provider_that_writes_txt(tmp_path: Path) -> None:
    where = tmp_path / "natsync.toml"
    name = {"name": "mail.example.com", "challenge": "dns-01"}
    with pytest.raises(ConfigError, match=r"dns-01: no \[ddns\] table"):
        deployment_from_dict({"cert": name}, where)
    with pytest.raises(ConfigError, match=r"ddns\.provider dyndns2 cannot set TXT records"):
        deployment_from_dict({"cert": name, "ddns": _ddns("dyndns2")}, where)
    # dyndns2 keeps the address; RFC 2136 (ddns.server/zone) publishes the TXT records.
    both = deployment_from_dict(
        {"cert": {**name, "dns_provider": "rfc2136"}, "ddns": _ddns("dyndns2")}, where
    )
    assert both.cert is not None
    assert both.cert.dns_provider == "rfc2136"
    with pytest.raises(ConfigError, match=r"cert.dns_provider cloudflare: .*\[ddns.cloudflare\]"):
        deployment_from_dict(
            {"cert": {**name, "dns_provider": "cloudflare"}, "ddns": _ddns("dyndns2")}, where
        )


def test_natsync_init_writes_the_documented_keys(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "init", "mail.example.test", "-o", str(tmp_path / "natsync.toml"), "--data-dir",
            str(tmp_path / "data"), "--no-detect", "-y", "--cert", "acme", "--https-port",
            "8443", "--smtp-port", "2525", "--http-port", "8080",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = (tmp_path / "natsync.toml").read_text()
    table = text.split("[cert]\n", 1)[1].split("\n[", 1)[0]
    keys = {line.split("=")[0].strip() for line in table.splitlines() if "=" in line}
    keys = {k for k in keys if not k.startswith("#")}
    assert keys == {"mode", "name", "directory", "challenge"}
    assert not keys & set(RENAMED)
    deployment = load_deployment(tmp_path / "natsync.toml")
    cert = deployment.cert
    assert cert is not None
    assert (cert.directory, cert.challenge, cert.http_listen) == ("production", "auto", "")
    # Port 80 is the edge's: HTTP-01 answers, everything else redirected to HTTPS.
    assert deployment.edge.http_listen == "0.0.0.0:8080"


def test_cert_acme_reads_the_same_table_dns01_through_ddns(
    pebble: Pebble, bind: Bind, tmp_path: Path
) -> None:
    """`natsync cert acme -c FILE`: name, directory, CA and challenge from [cert], DNS-01
    through [ddns]'s RFC 2136 server (BIND, which pebble resolves through); nothing listens
    for http-01 or tls-alpn-01."""
    name = f"table-{uuid.uuid4().hex[:8]}.{ZONE}"
    config = tmp_path / "natsync.toml"
    config.write_text(f"""
[server]
data_dir = "{tmp_path / "data"}"

[ddns]
server = "127.0.0.1:{bind.port}"
zone = "{ZONE}"
names = ["{name}"]
key_file = "{bind.key_file}"

[cert]
name = "{name}"
directory = "{pebble.directory_url}"
challenge = "dns-01"
ca_file = "{pebble.ca_file}"
""")
    result = CliRunner().invoke(main, ["cert", "acme", "-c", str(config), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output.strip().splitlines()[-1])
    assert doc["status"] == "issued", doc
    assert doc["challenge"] == "dns-01"
    assert doc["cert"] == str(tmp_path / "data" / "tls" / "server.pem")
    # renew re-reads the same file (its DNS-01 publisher) when due
    result = CliRunner().invoke(main, ["cert", "renew", "-c", str(config), "--force", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["challenge"] == "dns-01"


def test_natsync_check_names_the_new_key_of_an_old_one(tmp_path: Path) -> None:
    from natsync.run.checks import run_checks

    deployment = deployment_from_dict(
        {"cert": {"name": "a.example.com", "acme_email": "ops@example.com"}},
        tmp_path / "natsync.toml",
    )
    notices = [p for p in run_checks(deployment, bind=False) if p.where.startswith("cert.")]
    assert [(p.line(), p.fatal) for p in notices] == [
        (
            "cert.acme_email: the old name of cert.email (still read); fix: write email = ... "
            "instead (docs/cert.md)",
            False,
        )
    ]
