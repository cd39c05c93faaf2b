"""The command updater: a real program (a shell script driving BIND's own nsupdate) does the
writing into a real BIND; its exit status decides (sysexits 75 / 78), it is killed with its
children after the timeout, and the result is confirmed at the authoritative server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from natsync.ddns.errors import DnsUpdateError
from natsync.ddns.providers import make_updater, txt_publisher
from natsync.ddns.settings import DdnsSettings
from tests.ddns.providers_common import load, two_challenges
from tests.ddns.servers import Named, dig_values

NSUPDATE_SCRIPT = """#!/bin/sh
# $1 is the action ("{{action}}" in argv); the rest comes from the environment natsync sets.
N="$NATSYNC_DDNS_NAME."
{{
  echo "server {host} {port}"
  case "$1" in
    update)
      echo "update delete $N $NATSYNC_DDNS_TYPE"
      echo "update add $N $NATSYNC_DDNS_TTL $NATSYNC_DDNS_TYPE $NATSYNC_DDNS_ADDRESS";;
    add-txt)
      echo "update add $N 60 TXT \\"$NATSYNC_DDNS_VALUE\\"";;
    remove-txt)
      echo "update delete $N TXT \\"$NATSYNC_DDNS_VALUE\\"";;
  esac
  echo send
}} | nsupdate -k {key}
"""


def command_settings(
    tmp_path: Path, named: Named, argv: list[str], timeout: float = 5
) -> DdnsSettings:
    quoted = ", ".join(f'"{a}"' for a in argv)
    return load(
        tmp_path,
        f'provider = "command"\nnames = ["eas.example.test", "mail.example.test"]\n'
        f'confirm_servers = ["{named.address}"]\nconfirm_timeout = 2\n',
        f"[ddns.command]\nargv = [{quoted}]\ntimeout = {timeout}\n",
    )


def script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def nsupdate_script(tmp_path: Path, named: Named) -> Path:
    path = tmp_path / "update.sh"
    path.write_text(NSUPDATE_SCRIPT.format(host=named.host, port=named.port, key=named.key_file))
    path.chmod(0o755)
    return path


def test_program_updates_and_natsync_confirms(named_txt: Named, tmp_path: Path) -> None:
    program = nsupdate_script(tmp_path, named_txt)
    updater = make_updater(command_settings(tmp_path, named_txt, [str(program), "{action}"]))
    outcome = updater.publish("mail.example.test", "A", "192.0.3.10", 120)
    assert outcome.result == "updated"
    assert outcome.old == {"192.0.2.1"}
    assert dig_values(named_txt, "mail.example.test") == {"192.0.3.10"}
    assert updater.publish("mail.example.test", "A", "192.0.3.10", 120).result == "unchanged"


def test_program_sets_txt_for_dns01(named_txt: Named, tmp_path: Path) -> None:
    program = nsupdate_script(tmp_path, named_txt)
    settings = command_settings(tmp_path, named_txt, [str(program), "{action}"])
    two_challenges(txt_publisher(settings), named_txt)


def test_arguments_are_filled_in(named: Named, tmp_path: Path) -> None:
    out = tmp_path / "args"
    program = script(tmp_path, "args.sh", f'echo "$@" > {out}\nexit 3\n')
    updater = make_updater(
        command_settings(
            tmp_path, named, [str(program), "{action}", "{name}", "{type}", "{address}", "{ttl}"]
        )
    )
    with pytest.raises(DnsUpdateError, match="failed \\(exit 3\\)"):
        updater.publish("eas.example.test", "AAAA", "2a00:db8::1", 60)
    assert out.read_text().split() == ["update", "eas.example.test", "AAAA", "2a00:db8::1", "60"]


def test_exit_75_is_retried(named: Named, tmp_path: Path) -> None:
    program = script(tmp_path, "busy.sh", "echo 'provider busy' >&2\nexit 75\n")
    slept: list[float] = []
    updater = make_updater(
        command_settings(tmp_path, named, [str(program)]), sleep=slept.append, attempts=3
    )
    with pytest.raises(DnsUpdateError, match="temporary failure \\(exit 75\\): provider busy"):
        updater.publish("eas.example.test", "A", "192.0.3.10", 60)
    assert len(slept) == 2


def test_exit_78_stops_until_the_configuration_changes(named: Named, tmp_path: Path) -> None:
    program = script(tmp_path, "config.sh", "echo 'no API key' >&2\nexit 78\n")
    updater = make_updater(command_settings(tmp_path, named, [str(program)]))
    with pytest.raises(DnsUpdateError, match="no API key") as caught:
        updater.publish("eas.example.test", "A", "192.0.3.10", 60)
    assert caught.value.fatal


def test_missing_program_is_a_configuration_error(named: Named, tmp_path: Path) -> None:
    updater = make_updater(command_settings(tmp_path, named, [str(tmp_path / "nope")]))
    with pytest.raises(DnsUpdateError, match="cannot start it") as caught:
        updater.publish("eas.example.test", "A", "192.0.3.10", 60)
    assert caught.value.fatal


def test_hanging_program_and_its_children_are_killed(named: Named, tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    program = script(tmp_path, "hang.sh", f"sleep 30 &\necho $! > {pid_file}\nwait\n")
    updater = make_updater(command_settings(tmp_path, named, [str(program)], timeout=0.5))
    started = time.monotonic()
    with pytest.raises(DnsUpdateError, match=r"still running after 0\.5 s"):
        updater.publish("eas.example.test", "A", "192.0.3.10", 60)
    assert time.monotonic() - started < 5
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 2
    while alive(child):
        if time.monotonic() > deadline:
            pytest.fail("the program's child outlived the timeout")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for init to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
