"""`natsync user ...` and `natsync device ...`: administer the mailbox store from the shell.

Thin on purpose: each command opens the store (``--store``, else the file in ``--data-dir``),
runs one transaction and renders the result (a rich table for people, ``--json`` for scripts).
The server may be running on the same store: SQLite's WAL lets both work on one file, PostgreSQL
serves any number of clients, and the server sees the change on its next read.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from natsync import admin
from natsync.auth.passwords import hash_password
from natsync.errors import NatsyncError
from natsync.store import open_store, sqlite_file, store_path
from natsync.store.api import AccessState, Device, Store, Txn, User

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

#: Where the data lives unless told: the environment, then a directory beside the caller.
DATA_DIR_ENV = "NATSYNC_DATA_DIR"
DEFAULT_DATA_DIR = "natsync-data"
#: Names the store (a SQLite path or a postgresql:// URL) unless --store does; wins over the
#: data directory, as server.store does in the server's config.
STORE_ENV = "NATSYNC_STORE"

#: A password shorter than this is refused: phones store it once, so length costs nothing.
MIN_PASSWORD_LENGTH = admin.MIN_PASSWORD_LENGTH


#: Set by systemd for a unit with StateDirectory= (natsync.service: /var/lib/natsync), so the
#: admin commands run as the service user find the service's data without a flag.
STATE_DIRECTORY_ENV = "STATE_DIRECTORY"


def default_data_dir() -> Path:
    return Path(
        os.environ.get(DATA_DIR_ENV) or os.environ.get(STATE_DIRECTORY_ENV) or DEFAULT_DATA_DIR
    )


#: Names the deployment file, like -c/--config (the file natsync init writes).
CONFIG_ENV = "NATSYNC_CONFIG"

#: ``-c/--config FILE`` (or $NATSYNC_CONFIG): the deployment file a command reads its
#: [server] settings from (data_dir, store, public_name).
config_option = click.option(
    "-c",
    "--config",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    envvar=CONFIG_ENV,
    default=None,
    help=f"The deployment file (its [server] data_dir, store, public_name); also ${CONFIG_ENV}.",
)


def data_dir_option(fn: F) -> F:
    """``-c/--config``, ``--data-dir`` and ``--store``: the command's function gets
    ``store_name`` — --store, else DATA_DIR's file, else the deployment file's store, else
    the default data directory's."""

    @functools.wraps(fn)
    def wrapper(
        *args: Any, data_dir: Path | None, store: str | None, config: Path | None, **kwargs: Any
    ) -> Any:
        name = store or deployment_settings(config, data_dir).store
        return fn(*args, store_name=name, **kwargs)

    wrapped = click.option(
        "--store",
        default=None,
        envvar=STORE_ENV,
        show_envvar=True,
        help="The store: a SQLite path, sqlite:///path or a postgresql:// URL "
        "(the same as server.store). Default: DATA_DIR/natsync.db.",
    )(wrapper)
    wrapped = click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Directory holding natsync's data (the store is DATA_DIR/natsync.db). Default: "
        f"-c's server.data_dir, else ${DATA_DIR_ENV}, $STATE_DIRECTORY or ./{DEFAULT_DATA_DIR}.",
    )(wrapped)
    return config_option(wrapped)  # type: ignore[return-value]


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(fn)


@contextmanager
def _store(name: str, *, create: bool = False) -> Iterator[Store]:
    path = sqlite_file(name)
    if not create and path is not None and not path.exists():
        raise click.ClickException(
            f"no store at {path}: add a user first (natsync user add) or pass --data-dir / --store"
        )
    try:
        store = open_store(name)
    except NatsyncError as exc:
        raise click.ClickException(exc.message) from exc
    try:
        yield store
    finally:
        store.close()


def _run(store: Store, fn: Callable[[Txn], T]) -> T:
    try:
        return store.run_sync(fn)
    except NatsyncError as exc:
        raise click.ClickException(exc.message) from exc


def _now() -> datetime:
    return datetime.now(UTC)


def _read_password(password: str | None, from_stdin: bool) -> str:
    if password is not None and from_stdin:
        raise click.UsageError("give --password or --password-stdin, not both")
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        return admin.check_password(password)
    except NatsyncError as exc:
        raise click.ClickException(exc.message) from exc


def _require_user(txn: Txn, name: str) -> User:
    return admin.require_user(txn, name)


@dataclass(frozen=True, slots=True)
class DeploymentSettings:
    """What a command takes from the deployment file (-c), a flag winning over the file."""

    data_dir: Path
    store: str
    public_name: str


def deployment_settings(config: Path | None, data_dir: Path | None) -> DeploymentSettings:
    """The data directory, store and public name: *data_dir* if given, else the file's
    ``[server]`` (when *config* is given), else the defaults."""
    if config is None:
        directory = data_dir or default_data_dir()
        return DeploymentSettings(directory, str(store_path(directory)), "")
    from natsync.deployment import load_deployment

    try:  # the one loader of the deployment file (every table checked, the same defaults)
        loaded = load_deployment(config).server
    except NatsyncError as exc:
        raise click.ClickException(exc.message) from exc
    if data_dir is not None:
        return DeploymentSettings(data_dir, str(store_path(data_dir)), loaded.public_name)
    return DeploymentSettings(loaded.data_dir, loaded.store_url, loaded.public_name)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


#: The name natsync.cli.transfer imports.
_print_json = print_json


def table(
    title: str,
    columns: list[str],
    rows: list[list[str]],
    *,
    keep: tuple[str, ...] = (),
    console: Any = None,
) -> None:
    """Render a listing without ever cutting a value a user must copy.

    Piped (not a terminal): plain aligned columns at full width, one line per row, so ``grep``
    and ``awk`` see every id whole. On a terminal: a rich table whose *keep* columns (ids,
    names) never wrap and are never shortened, and whose other columns fold onto more lines
    rather than end in "…". When even that does not fit (80 columns and long ids), one block
    of "column: value" lines per row, as ``psql``'s expanded display does.
    """
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    out = console or Console(file=sys.stdout)
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    if not out.is_terminal:
        for line in [columns, *rows]:
            cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=True)]
            out.file.write("  ".join(cells).rstrip() + "\n")
        return
    # Kept columns at full width, the others at least as wide as their header, plus borders.
    needed = sum(w if c in keep else len(c) for c, w in zip(columns, widths, strict=True))
    if needed + 3 * len(columns) + 1 > out.width:
        label = max(len(c) for c in columns)
        out.print(title, style="bold", markup=False, highlight=False)
        for row in rows:
            out.print("")
            for column, cell in zip(columns, row, strict=True):
                out.print(
                    f"{column.rjust(label)}: {cell}", markup=False, highlight=False, soft_wrap=True
                )
        return
    shown = Table(title=title)
    for i, column in enumerate(columns):
        if column in keep:
            shown.add_column(column, no_wrap=True, min_width=widths[i])
        else:
            shown.add_column(column, overflow="fold")
    for row in rows:  # Text: a value like "[x]" is shown as written, not read as markup
        shown.add_row(*(Text(cell) for cell in row))
    out.print(shown)


def _when(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


# -- natsync user -------------------------------------------------------------------------------


@click.group()
def user() -> None:
    """Add, list, change and remove mailbox users."""


@user.command("add")
@click.argument("name")
@click.option("--email", required=True, help="The user's primary SMTP address.")
@click.option("--display-name", default=None, help="Shown on phones (default: NAME).")
@click.option("--password", default=None, help="Prompted (twice) when not given.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin's first line.")
@data_dir_option
@json_option
def user_add(
    name: str,
    email: str,
    display_name: str | None,
    password: str | None,
    password_stdin: bool,
    store_name: str,
    as_json: bool,
) -> None:
    """Add the user NAME (the login name phones send) with the standard folders."""
    if "@" not in email:
        raise click.BadParameter(f"{email!r} is not an email address", param_hint="--email")
    secret = _read_password(password, password_stdin)
    hashed = hash_password(secret)
    with _store(store_name, create=True) as store:
        added = _run(
            store,
            lambda txn: admin.add_user(txn, name, email, display_name or name, hashed, _now()),
        )
    if as_json:
        print_json(_user_json(added))
    else:
        click.echo(f"added user {added.name} <{added.email}>")


def _user_json(u: User) -> dict[str, Any]:
    return {
        "name": u.name,
        "email": u.email,
        "display_name": u.display_name,
        "created_at": u.created_at.isoformat(),
    }


@user.command("list")
@data_dir_option
@json_option
def user_list(store_name: str, as_json: bool) -> None:
    """List the users."""
    with _store(store_name) as store:
        users = _run(store, lambda txn: txn.list_users())
    if as_json:
        print_json([_user_json(u) for u in users])
        return
    table(
        "natsync users",
        ["name", "email", "display name", "created"],
        [[u.name, u.email, u.display_name, _when(u.created_at)] for u in users],
        keep=("name", "email"),
    )


@user.command("passwd")
@click.argument("name")
@click.option("--password", default=None, help="Prompted (twice) when not given.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin's first line.")
@data_dir_option
def user_passwd(name: str, password: str | None, password_stdin: bool, store_name: str) -> None:
    """Set a new password for NAME."""
    with _store(store_name) as store:
        _run(store, lambda txn: _require_user(txn, name))
        hashed = hash_password(_read_password(password, password_stdin))
        _run(store, lambda txn: admin.set_password(txn, name, hashed))
    click.echo(f"password of {name} changed")


@user.command("disable")
@click.argument("name")
@data_dir_option
def user_disable(name: str, store_name: str) -> None:
    """Refuse every login of NAME (mail and devices are kept; enable undoes it)."""
    with _store(store_name) as store:
        _run(store, lambda txn: admin.disable_user(txn, name))
    click.echo(f"user {name} disabled")


@user.command("enable")
@click.argument("name")
@data_dir_option
def user_enable(name: str, store_name: str) -> None:
    """Let NAME log in again with their password."""
    with _store(store_name) as store:
        _run(store, lambda txn: admin.enable_user(txn, name))
    click.echo(f"user {name} enabled")


@user.command("remove")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@data_dir_option
def user_remove(name: str, yes: bool, store_name: str) -> None:
    """Remove NAME with all their mail, folders and devices."""
    with _store(store_name) as store:
        _run(store, lambda txn: _require_user(txn, name))
        if not yes:
            click.confirm(f"Remove {name} and all their mail?", abort=True)
        _run(store, lambda txn: admin.remove_user(txn, name))
    click.echo(f"removed user {name}")


# -- natsync device -----------------------------------------------------------------------------


@click.group()
def device() -> None:
    """List devices and set their access (allow, block, quarantine) or wipe them."""


def _device_json(d: Device, owner: str) -> dict[str, Any]:
    return {
        "user": owner,
        "device_id": d.device_id,
        "device_type": d.device_type,
        "model": d.model,
        "os": d.os,
        "user_agent": d.user_agent,
        "protocol_version": d.protocol_version,
        "first_seen": d.first_seen.isoformat(),
        "last_seen": d.last_seen.isoformat(),
        "access_state": d.access_state.value,
        "policy_key": d.policy_key,
        "wipe_state": d.wipe_state.value,
        "wipe_requested_at": d.wipe_requested_at and d.wipe_requested_at.isoformat(),
        "wipe_acknowledged_at": d.wipe_acknowledged_at and d.wipe_acknowledged_at.isoformat(),
    }


@device.command("list")
@click.option("--user", "user_name", default=None, help="Only this user's devices.")
@click.option("--all", "show_all", is_flag=True, help="Also natsync doctor's test devices.")
@data_dir_option
@json_option
def device_list(user_name: str | None, show_all: bool, store_name: str, as_json: bool) -> None:
    """List the devices that have connected (not natsync doctor's test device: --all)."""
    from natsync.doctor.device import is_doctor_device

    def collect(txn: Txn) -> list[tuple[Device, str]]:
        names = {u.id: u.name for u in txn.list_users()}
        user_id = None if user_name is None else _require_user(txn, user_name).id
        return [
            (d, names.get(d.user_id, "?"))
            for d in txn.list_devices(user_id)
            if show_all or not is_doctor_device(d.device_id, d.device_type)
        ]

    with _store(store_name) as store:
        devices = _run(store, collect)
    if as_json:
        print_json([_device_json(d, owner) for d, owner in devices])
        return
    table(
        "natsync devices",
        ["user", "device id", "type", "model", "EAS", "last seen", "access", "wipe"],
        [
            [
                owner,
                d.device_id,
                d.device_type,
                d.model,
                d.protocol_version,
                _when(d.last_seen),
                d.access_state.value,
                d.wipe_state.value,
            ]
            for d, owner in devices
        ],
        keep=("user", "device id"),
    )


def _find_device(txn: Txn, device_id: str, user_name: str | None) -> Device:
    return admin.find_device(txn, device_id, user_name)


def _access_command(state: AccessState, verb: str) -> click.Command:
    @click.argument("device_id")
    @click.option("--user", "user_name", default=None, help="The device's user (if ambiguous).")
    @data_dir_option
    def command(device_id: str, user_name: str | None, store_name: str) -> None:
        with _store(store_name) as store:
            found = _run(store, lambda txn: admin.set_access(txn, device_id, user_name, state))
        click.echo(f"device {found.device_id} is now {state.value}")

    command.__doc__ = f"{verb} the device DEVICE_ID."
    return click.command()(command)


device.add_command(_access_command(AccessState.ALLOWED, "Allow"), "allow")
device.add_command(_access_command(AccessState.BLOCKED, "Block"), "block")
device.add_command(
    _access_command(AccessState.QUARANTINED, "Quarantine (the device sees only a notice)"),
    "quarantine",
)


@device.command("wipe")
@click.argument("device_id")
@click.option("--user", "user_name", default=None, help="The device's user (if ambiguous).")
@click.option(
    "--account-only",
    is_flag=True,
    help="Remove only this account's data from the device (EAS 16.1 AccountOnlyRemoteWipe).",
)
@click.option("--cancel", is_flag=True, help="Withdraw a wipe that was not yet sent.")
@data_dir_option
def device_wipe(
    device_id: str, user_name: str | None, account_only: bool, cancel: bool, store_name: str
) -> None:
    """Ask the device DEVICE_ID to wipe itself at its next connection."""
    if cancel and account_only:
        raise click.UsageError("--cancel and --account-only do not go together")

    def change(txn: Txn) -> Device:
        if cancel:
            return admin.cancel_wipe(txn, device_id, user_name, _now())
        return admin.wipe(txn, device_id, user_name, _now(), account_only=account_only)

    with _store(store_name) as store:
        found = _run(store, change)
    if cancel:
        click.echo(f"wipe of {found.device_id} cancelled")
    elif account_only:
        click.echo(f"{found.device_id} will remove this account at its next connection")
    else:
        click.echo(f"{found.device_id} will be wiped at its next connection")


@device.command("remove")
@click.argument("device_id")
@click.option("--user", "user_name", default=None, help="The device's user (if ambiguous).")
@data_dir_option
def device_remove(device_id: str, user_name: str | None, store_name: str) -> None:
    """Forget the device DEVICE_ID: its record, policy key, wipe state and sync state.

    A device that connects again starts afresh (provisioning, full sync). This is also how a
    device whose wipe was acknowledged stops being told to wipe.
    """

    with _store(store_name) as store:
        found = _run(store, lambda txn: admin.remove_device(txn, device_id, user_name))
    click.echo(f"device {found.device_id} removed")


@device.command("profile")
@click.argument("name")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the profile ('-' for standard output). Default: NAME.mobileconfig.",
)
@click.option("--host", default=None, help="The name phones connect to (default: -c's).")
@click.option("--port", type=click.IntRange(1, 65535), default=443, show_default=True)
@click.option(
    "--ca-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="The private CA phones must trust (default: DATA_DIR/ca/ca.pem when it exists).",
)
@click.option("--no-ca", is_flag=True, help="The certificate is from a public CA: no CA payload.")
@config_option
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Data directory (default: -c's, else ${DATA_DIR_ENV} or ./{DEFAULT_DATA_DIR}).",
)
@click.option("--store", default=None, envvar=STORE_ENV, help="The store (default: -c's).")
@json_option
def device_profile(
    name: str,
    output: Path | None,
    host: str | None,
    port: int,
    ca_file: Path | None,
    no_ca: bool,
    config: Path | None,
    data_dir: Path | None,
    store: str | None,
    as_json: bool,
) -> None:
    """Write NAME's iPhone/iPad profile (.mobileconfig) and print the Android settings."""
    from cryptography import x509

    from natsync.device.profile import Account, android_settings, profile

    deployment = deployment_settings(config, data_dir)
    data_dir = deployment.data_dir
    store_name = store or deployment.store
    host = host or deployment.public_name
    if not host:
        raise click.UsageError("give --host (the name phones connect to) or -c with public_name")
    with _store(store_name) as opened:
        found = _run(opened, lambda txn: _require_user(txn, name))
    account = Account(found.name, found.email, found.display_name, host, port)
    if ca_file is None and not no_ca and (data_dir / "ca" / "ca.pem").exists():
        ca_file = data_dir / "ca" / "ca.pem"
    ca = None
    if ca_file is not None and not no_ca:
        try:
            ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
        except ValueError as exc:
            raise click.ClickException(f"{ca_file} is not a PEM certificate") from exc
    data = profile(account, ca)
    target = output or Path(f"{name}.mobileconfig")
    if str(target) == "-":
        sys.stdout.buffer.write(data)
    else:
        target.write_bytes(data)
    export = f"natsync cert export-ca --data-dir {data_dir} --format der -o natsync-ca.crt"
    android = android_settings(account, export if ca is not None else None)
    if as_json:
        print_json(
            {
                "profile": None if str(target) == "-" else str(target),
                "host": account.server,
                "ca": None if ca_file is None or ca is None else str(ca_file),
                "android": dict(android),
            }
        )
        return
    say = functools.partial(click.echo, err=str(target) == "-")
    if str(target) != "-":
        say(f"wrote {target} ({len(data)} bytes)" + (f", with the CA {ca_file}" if ca else ""))
    say("iPhone/iPad: open the file on the phone (AirDrop, mail, or a web page), then")
    say("  Settings > Profile Downloaded > Install; enter the password when asked.")
    if ca is not None:
        say("  Then Settings > General > About > Certificate Trust Settings: trust the CA.")
    say("Android (Exchange account):")
    width = max(len(field) for field, _ in android)
    for field, value in android:
        say(f"  {field.ljust(width)}  {value}")
