"""The ``command`` updater: a program of the user's does the writing, for any provider natsync
does not speak.

The program gets the request both in its environment and, where ``ddns.command.argv`` has the
placeholders, in its arguments:

===================== ========================== =================================
environment           placeholder                value
===================== ========================== =================================
NATSYNC_DDNS_ACTION   ``{action}``               ``update``, ``add-txt``, ``remove-txt``
NATSYNC_DDNS_NAME     ``{name}``                 the name (no trailing dot)
NATSYNC_DDNS_TYPE     ``{type}``                 ``A``, ``AAAA`` or ``TXT``
NATSYNC_DDNS_ADDRESS  ``{address}``              the address (update)
NATSYNC_DDNS_TTL      ``{ttl}``                  the TTL asked for
NATSYNC_DDNS_VALUE    ``{value}``                the TXT value (add-txt, remove-txt)
===================== ========================== =================================

Its exit status decides, in sysexits(3) terms: 0 done; 75 (EX_TEMPFAIL) try again (with
backoff); 78 (EX_CONFIG) stop until the configuration changes; anything else is a failure that
the next check tries again. It runs at most ``ddns.command.timeout`` seconds, then it and its
children are killed. The result is confirmed at the zone's authoritative servers.
"""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any

from natsync.ddns.errors import DnsUpdateError
from natsync.ddns.provider_settings import CommandSettings
from natsync.ddns.providers.base import (
    Authoritative,
    DnsUpdater,
    Served,
    normalise,
    quote_txt,
)

#: sysexits(3): "temporary failure, indicating something that is not really an error".
EX_TEMPFAIL = 75
#: sysexits(3): "something was found in an unconfigured or misconfigured state".
EX_CONFIG = 78
#: How much of the program's error output goes into the message.
MAX_STDERR = 300


class CommandUpdater(DnsUpdater):
    kind = "command"
    #: The program may or may not set the TTL: only the address decides whether to update.
    takes_ttl = False

    def __init__(
        self, settings: CommandSettings, authoritative: Authoritative, **kwargs: Any
    ) -> None:
        super().__init__(authoritative, **kwargs)
        self.settings = settings

    def identity(self) -> tuple[str, ...]:
        return self.settings.argv

    def run(self, action: str, name: str, rdtype: str, **values: str) -> None:
        fields = {"action": action, "name": normalise(name), "type": rdtype, **values}
        argv = list(self.settings.argv)
        for key, value in fields.items():
            argv = [a.replace("{" + key + "}", value) for a in argv]
        env = dict(os.environ)
        env.update({f"NATSYNC_DDNS_{k.upper()}": v for k, v in fields.items()})
        what = f"ddns.command ({argv[0]}) {action} {name} {rdtype}"
        try:
            proc = subprocess.Popen(  # noqa: S603 - the user's own configured program
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise DnsUpdateError(
                f"{what}: cannot start it ({exc.strerror}); fix ddns.command.argv", fatal=True
            ) from exc
        try:
            _, err = proc.communicate(timeout=self.settings.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the group we started: it and its children
            proc.communicate()
            raise DnsUpdateError(
                f"{what}: still running after {self.settings.timeout:g} s (ddns.command.timeout);"
                " killed"
            ) from None
        said = err.decode("utf-8", "replace").strip()[-MAX_STDERR:]
        tail = f": {said}" if said else ""
        if proc.returncode == 0:
            return
        if proc.returncode == EX_TEMPFAIL:
            raise DnsUpdateError(f"{what}: temporary failure (exit 75){tail}", retryable=True)
        if proc.returncode == EX_CONFIG:
            raise DnsUpdateError(
                f"{what}: configuration error (exit 78){tail}; natsync runs it no more until "
                "the configuration changes",
                fatal=True,
            )
        raise DnsUpdateError(f"{what}: failed (exit {proc.returncode}){tail}")

    def send(self, name: str, rdtype: str, address: str, ttl: int, before: Served) -> None:
        self.run("update", name, rdtype, address=address, ttl=str(ttl), value="")

    def add_txt(self, owner: str, value: str) -> None:
        self.run("add-txt", owner, "TXT", address="", ttl="60", value=value)
        self.confirm(owner, "TXT", lambda s: quote_txt(value) in s.values)

    def remove_txt(self, owner: str, value: str) -> None:
        self.run("remove-txt", owner, "TXT", address="", ttl="60", value=value)
