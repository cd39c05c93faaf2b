"""`natsync user` and `natsync device`, end to end with CliRunner on a temporary data dir."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from natsync.auth.passwords import verify_password
from natsync.cli import main
from natsync.store.api import STANDARD_FOLDERS, AccessState, Txn, WipeState
from natsync.store.sqlite import SqliteStore

NOW = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def natsync(data_dir: Path, *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, [*args, "--data-dir", str(data_dir)], input=stdin)


def add_bob(data_dir: Path) -> None:
    result = natsync(
        data_dir,
        "user",
        "add",
        "bob",
        "--email",
        "bob@example.test",
        "--display-name",
        "Bob Builder",
        "--password-stdin",
        stdin="bobs-password\n",
    )
    assert result.exit_code == 0, result.output


def in_store(data_dir: Path, fn):  # type: ignore[no-untyped-def]
    store = SqliteStore(data_dir / "natsync.db")
    try:
        return store.run_sync(fn)
    finally:
        store.close()


def test_user_add_stores_a_hashed_password_and_the_standard_folders(data_dir: Path) -> None:
    add_bob(data_dir)

    def check(txn: Txn) -> tuple[str, int, str]:
        bob = txn.get_user("bob")
        assert bob is not None
        return txn.password_hash(bob.id), len(txn.list_folders(bob.id)), bob.display_name

    hashed, folders, display_name = in_store(data_dir, check)
    assert verify_password("bobs-password", hashed)
    assert "bobs-password" not in hashed
    assert (folders, display_name) == (len(STANDARD_FOLDERS), "Bob Builder")


def test_user_add_prompts_twice_when_no_password_is_given(data_dir: Path) -> None:
    result = natsync(
        data_dir,
        "user",
        "add",
        "carol",
        "--email",
        "carol@example.test",
        stdin="pw-carol-1\npw-carol-1\n",
    )
    assert result.exit_code == 0, result.output
    assert "Repeat for confirmation" in result.output
    hashed = in_store(data_dir, lambda txn: txn.password_hash(txn.get_user("carol").id))
    assert verify_password("pw-carol-1", hashed)


def test_user_add_refuses_duplicates_short_passwords_and_bad_addresses(data_dir: Path) -> None:
    add_bob(data_dir)
    again = natsync(
        data_dir, "user", "add", "bob", "--email", "b2@x.test", "--password", "long-enough"
    )
    assert again.exit_code == 1
    assert "exists" in again.output
    short = natsync(data_dir, "user", "add", "dan", "--email", "dan@x.test", "--password", "short")
    assert short.exit_code == 1
    assert "too short" in short.output
    bad = natsync(data_dir, "user", "add", "eve", "--email", "eve", "--password", "long-enough")
    assert bad.exit_code == 2
    assert "not an email address" in bad.output


def test_user_list_as_table_and_json(data_dir: Path) -> None:
    add_bob(data_dir)
    table = natsync(data_dir, "user", "list")
    assert table.exit_code == 0
    assert "bob@example.test" in table.output
    listed = json.loads(natsync(data_dir, "user", "list", "--json").output)
    assert [(u["name"], u["email"], u["display_name"]) for u in listed] == [
        ("bob", "bob@example.test", "Bob Builder")
    ]


def test_commands_on_a_missing_store_say_what_to_do(data_dir: Path) -> None:
    result = natsync(data_dir, "user", "list")
    assert result.exit_code == 1
    assert "natsync user add" in result.output
    assert not data_dir.exists()


def test_data_dir_comes_from_the_environment(tmp_path: Path) -> None:
    runner = CliRunner(env={"NATSYNC_DATA_DIR": str(tmp_path / "env-data")})
    result = runner.invoke(
        main, ["user", "add", "fay", "--email", "fay@x.test", "--password", "fays-password"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "env-data" / "natsync.db").exists()


def test_user_passwd_and_remove(data_dir: Path) -> None:
    add_bob(data_dir)
    changed = natsync(data_dir, "user", "passwd", "bob", "--password-stdin", stdin="new-password\n")
    assert changed.exit_code == 0, changed.output
    hashed = in_store(data_dir, lambda txn: txn.password_hash(txn.get_user("bob").id))
    assert verify_password("new-password", hashed)
    assert natsync(data_dir, "user", "passwd", "nobody", "--password", "whatever-1").exit_code == 1
    refused = natsync(data_dir, "user", "remove", "bob", stdin="n\n")
    assert refused.exit_code == 1
    assert in_store(data_dir, lambda txn: txn.get_user("bob")) is not None
    removed = natsync(data_dir, "user", "remove", "bob", "--yes")
    assert removed.exit_code == 0, removed.output
    assert in_store(data_dir, lambda txn: txn.get_user("bob")) is None


def seed_device(data_dir: Path, device_id: str = "PHONE1", user: str = "bob") -> None:
    in_store(
        data_dir,
        lambda txn: txn.touch_device(
            txn.get_user(user).id, device_id, "iPhone", "16.1", "Apple-iPhone17C1/2201.1", NOW
        ),
    )


def device_of(data_dir: Path, device_id: str = "PHONE1", user: str = "bob"):  # type: ignore[no-untyped-def]
    return in_store(data_dir, lambda txn: txn.get_device(txn.get_user(user).id, device_id))


@pytest.mark.parametrize(
    ("command", "state"),
    [
        ("block", AccessState.BLOCKED),
        ("quarantine", AccessState.QUARANTINED),
        ("allow", AccessState.ALLOWED),
    ],
)
def test_device_access_commands(data_dir: Path, command: str, state: AccessState) -> None:
    add_bob(data_dir)
    seed_device(data_dir)
    if state is AccessState.ALLOWED:
        natsync(data_dir, "device", "block", "PHONE1")
    result = natsync(data_dir, "device", command, "PHONE1")
    assert result.exit_code == 0, result.output
    assert device_of(data_dir).access_state is state


def test_device_list_as_table_and_json(data_dir: Path) -> None:
    add_bob(data_dir)
    seed_device(data_dir)
    assert "PHONE1" in natsync(data_dir, "device", "list").output
    listed = json.loads(natsync(data_dir, "device", "list", "--json", "--user", "bob").output)
    assert [(d["user"], d["device_id"], d["access_state"], d["wipe_state"]) for d in listed] == [
        ("bob", "PHONE1", "allowed", "none")
    ]


def test_device_wipe_full_account_only_and_cancel(data_dir: Path) -> None:
    add_bob(data_dir)
    seed_device(data_dir)
    assert natsync(data_dir, "device", "wipe", "PHONE1").exit_code == 0
    pending = device_of(data_dir)
    assert pending.wipe_state is WipeState.PENDING
    assert pending.wipe_requested_at is not None
    assert natsync(data_dir, "device", "wipe", "PHONE1", "--cancel").exit_code == 0
    assert device_of(data_dir).wipe_state is WipeState.NONE
    assert natsync(data_dir, "device", "wipe", "PHONE1", "--account-only").exit_code == 0
    assert device_of(data_dir).wipe_state is WipeState.ACCOUNT_ONLY_PENDING
    none_left = natsync(data_dir, "device", "wipe", "PHONE1", "--cancel")
    assert none_left.exit_code == 0
    again = natsync(data_dir, "device", "wipe", "PHONE1", "--cancel")
    assert again.exit_code == 1
    assert "no wipe to cancel" in again.output


def test_device_remove_forgets_an_acknowledged_wipe(data_dir: Path) -> None:
    add_bob(data_dir)
    seed_device(data_dir)
    in_store(
        data_dir,
        lambda txn: txn.set_wipe_state(
            txn.get_device(txn.get_user("bob").id, "PHONE1").id,
            WipeState.ACKNOWLEDGED,
            datetime.now(UTC),
        ),
    )
    result = natsync(data_dir, "device", "remove", "PHONE1")
    assert result.exit_code == 0, result.output
    assert "removed" in result.output
    assert device_of(data_dir) is None
    again = natsync(data_dir, "device", "remove", "PHONE1")
    assert again.exit_code == 1
    assert "no device" in again.output


def test_an_ambiguous_device_id_needs_user(data_dir: Path) -> None:
    add_bob(data_dir)
    natsync(data_dir, "user", "add", "carol", "--email", "c@x.test", "--password", "carols-pw")
    seed_device(data_dir, "SAME", "bob")
    seed_device(data_dir, "SAME", "carol")
    ambiguous = natsync(data_dir, "device", "block", "SAME")
    assert ambiguous.exit_code == 1
    assert "--user" in ambiguous.output
    assert natsync(data_dir, "device", "block", "SAME", "--user", "carol").exit_code == 0
    assert device_of(data_dir, "SAME", "carol").access_state is AccessState.BLOCKED
    assert device_of(data_dir, "SAME", "bob").access_state is AccessState.ALLOWED
    missing = natsync(data_dir, "device", "allow", "NOPE")
    assert missing.exit_code == 1
    assert "no device" in missing.output


#: A real iPhone's DeviceId is 32 characters; Android clients send longer ones.
LONG_ID = "ApplF17XK2Q9LMN0PQRSTUV0123456789ABCDEF"


def test_device_list_piped_keeps_every_id_whole(data_dir: Path) -> None:
    """Piped (not a terminal): plain columns at full width, one line per device."""
    add_bob(data_dir)
    seed_device(data_dir, LONG_ID)
    seed_device(data_dir, "androidc1234567890abcdef1234567890")
    lines = natsync(data_dir, "device", "list").output.splitlines()
    assert lines[0].split()[:3] == ["user", "device", "id"]
    rows = [line.split() for line in lines[1:]]
    assert {row[1] for row in rows} == {LONG_ID, "androidc1234567890abcdef1234567890"}
    assert all(row[0] == "bob" for row in rows)
    assert "…" not in "\n".join(lines)


def render_at_80(rows: list[list[str]]) -> str:
    import io

    from rich.console import Console

    from natsync.cli.admin import table

    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True, color_system=None)
    table(
        "natsync devices",
        ["user", "device id", "type", "model", "EAS", "last seen", "access"],
        rows,
        keep=("user", "device id"),
        console=console,
    )
    return out.getvalue()


def test_device_table_at_80_columns_folds_the_rest_but_never_an_id() -> None:
    model = "Apple-iPhone17C1/2201.1 [with] a long user agent"
    text = render_at_80([["bob", "PHONE1", "iPhone", model, "16.1", "2026-03-01", "allowed"]])
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "│ bob  │ PHONE1    │" in text
    for header in ("type", "model", "EAS", "access"):
        assert header in text
    cells = [line.split("│")[4] for line in text.splitlines() if line.count("│") == 8]
    assert "".join("".join(cells).split()) == "".join(model.split())  # folded, all there


def test_ids_too_long_for_80_columns_are_shown_one_field_a_line() -> None:
    user = "a-rather-long-user-name"
    text = render_at_80([[user, LONG_ID, "iPhone", "iPhone17C1", "16.1", "2026-03-01", "allowed"]])
    lines = text.splitlines()
    assert f"device id: {LONG_ID}" in [line.strip() for line in lines]
    assert f"user: {user}" in [line.strip() for line in lines]
    assert "…" not in text


def test_the_deployment_file_names_the_store(tmp_path: Path) -> None:
    """-c (or NATSYNC_CONFIG) finds the store natsync run uses; --data-dir still wins."""
    data = tmp_path / "var-lib-natsync"
    config = tmp_path / "natsync.toml"
    config.write_text(f'[server]\ndata_dir = "{data}"\n')
    runner = CliRunner()
    added = runner.invoke(
        main,
        [
            "user",
            "add",
            "gus",
            "--email",
            "gus@x.test",
            "--password",
            "guss-password",
            "-c",
            str(config),
        ],
    )
    assert added.exit_code == 0, added.output
    assert (data / "natsync.db").exists()
    by_env = runner.invoke(main, ["user", "list", "--json"], env={"NATSYNC_CONFIG": str(config)})
    assert [u["name"] for u in json.loads(by_env.output)] == ["gus"]
    elsewhere = runner.invoke(
        main, ["user", "list", "-c", str(config), "--data-dir", str(tmp_path / "other")]
    )
    assert elsewhere.exit_code == 1
    assert "no store" in elsewhere.output
    broken = tmp_path / "broken.toml"
    broken.write_text("[server]\nport = 'x'\n")
    bad = runner.invoke(main, ["user", "list", "-c", str(broken)])
    assert bad.exit_code == 1
    assert "server.port must be an integer" in bad.output
    assert "Traceback" not in bad.output
