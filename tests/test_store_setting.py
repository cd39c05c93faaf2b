"""One setting picks the store: ``[server] store`` for ``natsync server``, ``--store`` /
$NATSYNC_STORE for ``natsync user`` / ``device``; checked at load, and run for real on the
session's PostgreSQL server (tests/pg.py)."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from natsync.cli import main
from natsync.config import load_config
from natsync.errors import ConfigError
from natsync.store import open_store
from natsync.wbxml import E, decode, encode
from tests import pg

#: Seconds natsync server may take to print its address.
SERVER_START_TIMEOUT = 20


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "natsync.toml"
    path.write_text("[server]\n" + text + "\n", encoding="utf-8")
    return path


# -- server.store in the config file -------------------------------------------------------------


def test_empty_store_is_the_file_in_data_dir(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, 'data_dir = "/var/lib/natsync"'))
    assert config.store == ""
    assert config.store_url == "/var/lib/natsync/natsync.db"


@pytest.mark.parametrize(
    ("value", "url"),
    [
        (
            "postgresql://natsync@db.example.org/natsync",
            "postgresql://natsync@db.example.org/natsync",
        ),
        ("postgres://u:secret@127.0.0.1:5432/mail", "postgres://u:secret@127.0.0.1:5432/mail"),
        ("sqlite:///srv/natsync/mail.db", "sqlite:///srv/natsync/mail.db"),
        ("/srv/natsync/mail.db", "/srv/natsync/mail.db"),
    ],
)
def test_store_values_are_used_as_given(tmp_path: Path, value: str, url: str) -> None:
    config = load_config(_config(tmp_path, f'data_dir = "/elsewhere"\nstore = "{value}"'))
    assert config.store_url == url


def test_relative_store_path_is_taken_from_the_config_folder(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, 'store = "db/mail.db"'))
    assert config.store_url == str(tmp_path / "db" / "mail.db")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('store = "mysql://root@localhost/mail"', "server.store has an unknown scheme 'mysql'"),
        ('store = "sqlite://relative.db"', "server.store 'sqlite://relative.db'"),
        ('store = "sqlite:///"', "server.store"),
        ("store = 5", "server.store must be a string"),
    ],
)
def test_bad_store_values_name_the_setting(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(_config(tmp_path, text))


def test_server_command_refuses_a_bad_store_before_starting(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["server", "--store", "redis://127.0.0.1/0"])
    assert result.exit_code == 1
    assert "server.store has an unknown scheme 'redis'" in result.output


# -- natsync user / device --store ---------------------------------------------------------------


@pytest.fixture
def pg_url(pg_server: pg.PgServer) -> Iterator[str]:
    """A fresh, migrated, empty database on the session's PostgreSQL server."""
    url = pg_server.acquire()
    yield url
    pg_server.release(url)


def _natsync(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=stdin, env=env)


def _add_bob(*store_args: str, env: dict[str, str] | None = None) -> None:
    result = _natsync(
        "user",
        "add",
        "bob",
        "--email",
        "bob@example.test",
        "--password-stdin",
        *store_args,
        stdin="bobs-password\n",
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert "added user bob <bob@example.test>" in result.output


def _listed(*store_args: str, env: dict[str, str] | None = None) -> list[str]:
    result = _natsync("user", "list", "--json", *store_args, env=env)
    assert result.exit_code == 0, result.output
    return [u["name"] for u in json.loads(result.output)]


def test_user_add_and_list_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    _add_bob("--store", pg_url, "--data-dir", str(data_dir))
    assert _listed("--store", pg_url) == ["bob"]
    # It went to PostgreSQL, not to a file in the data directory.
    assert not data_dir.exists()
    store = open_store(pg_url)
    try:
        bob = store.run_sync(lambda txn: txn.get_user("bob"))
        assert bob is not None
        assert bob.email == "bob@example.test"
        assert len(store.run_sync(lambda txn: txn.list_folders(bob.id))) >= 5
    finally:
        store.close()


def test_natsync_store_env_names_the_store(pg_url: str) -> None:
    _add_bob(env={"NATSYNC_STORE": pg_url})
    assert _listed("--store", pg_url) == ["bob"]
    assert _listed(env={"NATSYNC_STORE": pg_url}) == ["bob"]
    devices = _natsync("device", "list", "--json", env={"NATSYNC_STORE": pg_url})
    assert devices.exit_code == 0, devices.output
    assert json.loads(devices.output) == []


def test_sqlite_url_and_data_dir_name_the_same_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    _add_bob("--store", f"sqlite://{data_dir / 'natsync.db'}")
    assert _listed("--data-dir", str(data_dir)) == ["bob"]


def test_missing_sqlite_store_is_reported_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "none" / "natsync.db"
    result = _natsync("user", "list", "--store", f"sqlite://{missing}")
    assert result.exit_code == 1
    assert f"no store at {missing}" in result.output
    assert not missing.exists()


def test_unknown_store_scheme_is_a_clear_error() -> None:
    result = _natsync("user", "list", "--store", "mysql://root@localhost/mail")
    assert result.exit_code == 1
    assert "unknown store kind 'mysql'" in result.output


# -- natsync server on PostgreSQL ----------------------------------------------------------------


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_natsync_server_serves_from_the_postgresql_store(pg_url: str, tmp_path: Path) -> None:
    _add_bob("--store", pg_url)
    data_dir = tmp_path / "data"
    config = _config(
        tmp_path,
        f'host = "127.0.0.1"\nport = 0\ndata_dir = "{data_dir}"\nstore = "{pg_url}"\n'
        "require_provisioning = false",
    )
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "natsync"), "server", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        url = banner = ""
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        assert proc.stderr is not None
        while time.monotonic() < deadline and not url:
            banner = proc.stderr.readline()
            if not banner:
                break
            m = re.search(r"ActiveSync at (\S+)", banner)
            url = m.group(1) if m else ""
        assert url.startswith("http://127.0.0.1:"), banner
        assert f"(store {pg_url})" in banner

        options = urllib.request.Request(
            url, method="OPTIONS", headers={"Authorization": _basic("bob", "bobs-password")}
        )
        with urllib.request.urlopen(options, timeout=5) as response:
            assert response.status == 200
            assert "16.1" in response.headers["MS-ASProtocolVersions"]

        body = encode(E("FolderHierarchy", "FolderSync", E("FolderHierarchy", "SyncKey", "0")))
        folder_sync = urllib.request.Request(
            url + "?Cmd=FolderSync&User=bob&DeviceId=pgphone&DeviceType=TestPhone",
            data=body,
            method="POST",
            headers={
                "Authorization": _basic("bob", "bobs-password"),
                "MS-ASProtocolVersion": "16.1",
                "Content-Type": "application/vnd.ms-sync.wbxml",
            },
        )
        with urllib.request.urlopen(folder_sync, timeout=10) as response:
            assert response.status == 200
            tree = decode(response.read())
        assert tree.child_text("Status") == "1"
        changes = tree.find("Changes")
        assert changes is not None
        names = {add.child_text("DisplayName") for add in changes.children if add.tag == "Add"}
        assert {"Inbox", "Sent Items"} <= names
        # The store is PostgreSQL: no SQLite file appeared, and the device was recorded there.
        assert not (data_dir / "natsync.db").exists()
        devices = _natsync("device", "list", "--json", "--store", pg_url)
        assert devices.exit_code == 0, devices.output
        assert [d["device_id"] for d in json.loads(devices.output)] == ["pgphone"]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        assert proc.stderr is not None
        proc.stderr.close()
    assert code == 0
