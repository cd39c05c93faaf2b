"""natsync as a systemd service: the unit shipped with the package, and what installing it does.

The unit (``natsync.service`` beside this module, package data) runs ``natsync run -c
/etc/natsync/natsync.toml`` as the unprivileged user ``natsync`` with only
CAP_NET_BIND_SERVICE (ports 25, 80 and 443 without root), its data in ``/var/lib/natsync``
(StateDirectory) and the usual hardening (ProtectSystem=strict, NoNewPrivileges, PrivateTmp ...).

:func:`plan` works out the steps (pure: the paths, the user database and whether systemd runs
are given), :func:`apply` carries them out; ``natsync install-service --dry-run`` prints the plan
only. Every step is idempotent: installing again after an upgrade rewrites the unit (with the
path of the natsync now installed) and changes nothing else.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from natsync.errors import NatsyncError

#: The unit's name, and the path systemd reads local units from (systemd.unit(5)).
UNIT_NAME = "natsync.service"
UNIT_DIR = Path("etc/systemd/system")
#: The service user and the directories systemd gives it (StateDirectory, ConfigurationDirectory).
SERVICE_USER = "natsync"
STATE_DIR = Path("var/lib/natsync")
CONFIG_DIR = Path("etc/natsync")
CONFIG_FILE = CONFIG_DIR / "natsync.toml"
#: ExecStart of the shipped file: a virtualenv in /opt/natsync (docs/deploy.md installs there).
SHIPPED_BINARY = "/opt/natsync/bin/natsync"
SHIPPED_CONFIG = "/etc/natsync/natsync.toml"
#: Where systemd keeps its runtime state when it is the init system (sd_booted(3)).
SYSTEMD_RUNNING_MARK = Path("/run/systemd/system")


class ServiceError(NatsyncError):
    """The service cannot be installed as asked; the message says what to do."""


def shipped_unit() -> str:
    """The unit file as shipped in the package."""
    return (resources.files("natsync.service") / UNIT_NAME).read_text(encoding="utf-8")


def unit_text(binary: Path, config: Path) -> str:
    """The shipped unit with ExecStart naming *binary* and the deployment file *config*."""
    text = shipped_unit()
    if not binary.is_absolute() or not config.is_absolute():
        raise ServiceError(f"give absolute paths (got {binary} and {config})")
    return text.replace(SHIPPED_BINARY, str(binary)).replace(SHIPPED_CONFIG, str(config))


@dataclass(frozen=True, slots=True)
class Step:
    """One thing installing does; ``argv`` is run, else ``path`` is written with ``content``."""

    what: str
    argv: tuple[str, ...] = ()
    path: Path | None = None
    content: str | None = None
    mode: int | None = None
    owner: str | None = None  # "user:group" for chown
    #: chown everything below too (files natsync init wrote as root in the state directory)
    recursive: bool = False


def _user_exists(root: Path, user: str) -> bool:
    passwd = root / "etc/passwd"
    try:
        lines = passwd.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ServiceError(f"cannot read {passwd}: {exc.strerror}") from exc
    return any(line.split(":", 1)[0] == user for line in lines)


def plan(
    *,
    binary: Path,
    root: Path = Path("/"),
    user: str = SERVICE_USER,
    config: Path | None = None,
    systemd_running: bool = False,
    start: bool = False,
) -> list[Step]:
    """The steps that install the service under *root* ("/" on a real machine)."""
    config = config or Path("/") / CONFIG_FILE
    state = root / STATE_DIR
    config_dir = root / config.relative_to("/").parent
    steps: list[Step] = []
    if not _user_exists(root, user):
        prefix = () if root == Path("/") else ("--prefix", str(root))
        steps.append(
            Step(
                f"create the system user {user} (no login, home {Path('/') / STATE_DIR})",
                argv=(
                    "useradd",
                    *prefix,
                    "--system",
                    "--user-group",
                    "--home-dir",
                    str(Path("/") / STATE_DIR),
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    user,
                ),
            )
        )
    unit_path = root / UNIT_DIR / UNIT_NAME
    steps.append(
        Step(
            f"write {unit_path} (ExecStart={binary} run -c {config})",
            path=unit_path,
            content=unit_text(binary, config),
            mode=0o644,
        )
    )
    steps.append(
        Step(
            f"make {state} (mode 0700) and give it and everything in it to {user}",
            path=state,
            mode=0o700,
            owner=user,
            recursive=True,
        )
    )
    steps.append(
        Step(
            f"make {config_dir} (mode 0750, group {user}: the service reads, only root writes)",
            path=config_dir,
            mode=0o750,
            owner=f"root:{user}",
        )
    )
    # The deployment file and what it names beside it (TSIG key, CA files) hold secrets: the
    # service's group reads them, nobody else.
    files = sorted(p for p in config_dir.iterdir() if p.is_file()) if config_dir.is_dir() else []
    for path in files:
        steps.append(
            Step(
                f"let the service read {path} (mode 0640, group {user})",
                path=path,
                mode=0o640,
                owner=f"root:{user}",
            )
        )
    if systemd_running and root == Path("/"):
        steps.append(Step("reload systemd's units", argv=("systemctl", "daemon-reload")))
        enable = ("systemctl", "enable", *(("--now",) if start else ()), UNIT_NAME)
        steps.append(Step("enable natsync at boot" + (" and start it" if start else ""), enable))
    return steps


def _ids(root: Path, owner: str) -> tuple[int, int]:
    """uid and gid of "user" or "user:group", looked up in *root*'s passwd and group files."""
    user, _, group = owner.partition(":")

    def lookup(path: Path, name: str) -> int:
        for line in (root / path).read_text(encoding="utf-8").splitlines():
            fields = line.split(":")
            if fields[0] == name and len(fields) > 2:
                return int(fields[2])
        raise ServiceError(f"no {name!r} in {root / path}: create it (useradd --system {name})")

    uid = lookup(Path("etc/passwd"), user)
    gid = lookup(Path("etc/group"), group or user)
    return uid, gid


def apply(steps: list[Step], root: Path = Path("/")) -> None:
    """Carry out *steps* in order (root privileges needed on a real machine)."""
    for step in steps:
        if step.argv:
            if shutil.which(step.argv[0]) is None:
                raise ServiceError(f"{step.argv[0]} is not installed: cannot {step.what}")
            # Fixed programs (useradd, systemctl) with argument lists, no shell.
            done = subprocess.run(step.argv, capture_output=True, text=True, check=False)  # noqa: S603
            if done.returncode != 0:
                raise ServiceError(
                    f"{' '.join(step.argv)} failed ({done.returncode}): "
                    f"{(done.stderr or done.stdout).strip()}"
                )
            continue
        assert step.path is not None
        try:
            if step.content is not None:
                step.path.parent.mkdir(parents=True, exist_ok=True)
                step.path.write_text(step.content, encoding="utf-8")
            elif not step.path.exists():
                step.path.mkdir(parents=True)
            if step.mode is not None:
                step.path.chmod(step.mode)
            if step.owner is not None:
                ids = _ids(root, step.owner)
                os.chown(step.path, *ids)
                below = step.path.rglob("*") if step.recursive else ()
                for inner in below:
                    os.chown(inner, *ids, follow_symlinks=False)
        except PermissionError as exc:
            raise ServiceError(
                f"permission denied on {step.path}: run natsync install-service as root"
            ) from exc
        except OSError as exc:
            raise ServiceError(f"cannot {step.what}: {exc.strerror}") from exc


def systemd_running() -> bool:
    """Whether systemd is this machine's init system (sd_booted(3): /run/systemd/system)."""
    return SYSTEMD_RUNNING_MARK.is_dir()
