"""`natsync ddns update/status` through click, with a real HTTP echo service and a real BIND."""

from __future__ import annotations

import json
import os
from pathlib import Path

from click.testing import CliRunner

from natsync.cli import main
from tests.ddns.servers import KEY_NAME, Echo, Named, dig_values, key_file_text


def config(tmp_path: Path, named: Named, url: str, key_file: Path | None = None) -> Path:
    path = tmp_path / "natsync.toml"
    path.write_text(f"""
[server]
data_dir = "data"
[ddns]
server = "{named.address}"
zone = "example.test"
names = ["eas.example.test", "mail.example.test"]
key_file = "{key_file or named.key_file}"
sources = ["echo"]
families = [4]
echo_urls = ["{url}"]
mx_domain = "example.test"
timeout = 1.0
""")
    return path


def test_update_then_status_tell_the_truth(
    tmp_path: Path, named: Named, echo: tuple[str, type[Echo]]
) -> None:
    url, service = echo
    cfg = config(tmp_path, named, url)
    runner = CliRunner()
    result = runner.invoke(main, ["ddns", "update", "-c", str(cfg)])
    assert result.exit_code == 0, result.output
    assert "mail.example.test A: updated 192.0.2.1 -> 192.0.3.10" in result.output
    assert dig_values(named, "eas.example.test") == {"192.0.3.10"}

    service.address = "192.0.3.11"  # the address changed; nothing published it yet
    result = runner.invoke(main, ["ddns", "status", "-c", str(cfg), "--json"])
    assert result.exit_code == 0, result.output
    state = json.loads(result.output)
    eas = next(n for n in state["names"] if n["name"] == "eas.example.test")
    assert eas["published"] == ["192.0.3.10"]
    assert eas["current"] == "192.0.3.11"
    assert eas["in_sync"] is False
    assert eas["last_result"] == "updated"
    assert state["mx"]["followed"] is True

    text = runner.invoke(main, ["ddns", "status", "-c", str(cfg)]).output
    assert (
        "eas.example.test A: published 192.0.3.10 (TTL 60 s); current 192.0.3.11 [OUT OF DATE]"
        in text
    )
    assert "MX of example.test: mail.example.test (kept up to date)" in text

    recorded = runner.invoke(main, ["ddns", "status", "-c", str(cfg), "--json", "--no-probe"])
    assert json.loads(recorded.output)["verdicts"][0]["address"] == "192.0.3.10"


def test_wrong_key_is_an_error_in_exit_code_and_status(
    tmp_path: Path, named: Named, echo: tuple[str, type[Echo]]
) -> None:
    url, _ = echo
    wrong = tmp_path / "wrong.key"
    secret = os.urandom(32)
    wrong.write_text(key_file_text(KEY_NAME, secret))
    cfg = config(tmp_path, named, url, key_file=wrong)
    runner = CliRunner()
    result = runner.invoke(main, ["ddns", "update", "-c", str(cfg)])
    assert result.exit_code == 1
    assert "TSIG signature" in result.output
    import base64

    assert base64.b64encode(secret).decode() not in result.output
    state = json.loads(runner.invoke(main, ["ddns", "status", "-c", str(cfg), "--json"]).output)
    assert {n["last_result"] for n in state["names"]} == {"error"}
    assert "TSIG" in state["names"][0]["last_detail"]


def test_missing_settings_are_named(tmp_path: Path) -> None:
    path = tmp_path / "natsync.toml"
    path.write_text("[ddns]\n")
    result = CliRunner().invoke(main, ["ddns", "update", "-c", str(path)])
    assert result.exit_code == 1
    assert "ddns.server, ddns.zone, ddns.names" in result.output
