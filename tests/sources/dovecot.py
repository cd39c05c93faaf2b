"""A real Dovecot (Debian's dovecot-imapd + dovecot-lmtpd, 2.3) for the tests and the bench.

It runs from a configuration written into a temporary directory: passwd-file users, maildirs in
that directory, IMAP (STARTTLS), IMAPS and LMTP on free loopback ports, TLS with a certificate of
a test CA (natsync.cert.ca), and ``mail_uid`` set to Dovecot's own user (it refuses mail
access as root) so it runs from a root test run (CI). With Pigeonhole (Debian's dovecot-sieve)
installed, LMTP runs a global Sieve script that files a user's own mail coming back to them in
Sent (:data:`SENT_COPY_SIEVE`): a server that keeps its own Sent copies.
It is started with ``dovecot -F -c CONF`` and stopped by its PID.
"""

from __future__ import annotations

import contextlib
import imaplib
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from natsync.cert.ca import init_ca

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
DOVEADM = shutil.which("doveadm") or "/usr/bin/doveadm"
#: Seconds Dovecot may take to listen (it starts in well under a second here).
START_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def available() -> bool:
    return Path(DOVECOT).exists()


#: Pigeonhole's Sieve plugin (Debian's dovecot-sieve), for a server that files Sent copies.
SIEVE_PLUGIN = Path("/usr/lib/dovecot/modules/lib90_sieve_plugin.so")


def sieve_available() -> bool:
    return SIEVE_PLUGIN.exists()


#: Run before every delivery (LMTP): the copy of a user's own mail that comes back to them
#: — Postfix's ``sender_bcc_maps`` sends one — is filed in Sent, read: the mail server keeps
#: the Sent copy itself (natsync's ``sent_copy = "server"``), as a mailcow/Dovecot admin sets
#: it up with a global Sieve script.
SENT_COPY_SIEVE = """\
require ["envelope", "variables", "fileinto", "imap4flags"];
if envelope :matches "to" "*" {{ set "me" "${{1}}"; }}
if address :is "from" "${{me}}" {{
  setflag "\\\\Seen";
  fileinto "Sent";
  stop;
}}
"""
SIEVE_CONF = """
plugin {{
  sieve_before = {mail}/sieve/sent-copy.sieve
}}
"""


CONF = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
protocols = imap lmtp submission
hostname = mail.example.test
listen = 127.0.0.1
ssl = required
ssl_cert = <{root}/tls/server.pem
ssl_key = <{root}/tls/server.key
ssl_min_protocol = TLSv1.2
auth_mechanisms = plain login
auth_failure_delay = 0
disable_plaintext_auth = yes
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
first_valid_uid = 1
first_valid_gid = 1
mail_uid = dovecot
mail_gid = dovecot
mail_location = {mail_format}:{mail}/%u
mail_plugins = $mail_plugins notify quota acl
# Maildir++ quota; no rule by default (no limit): a user's passwd-file line can set one
# (userdb_quota_rule, see Dovecot.extra), for the tests of a server's NO [OVERQUOTA].
# ACLs (RFC 4314) from one global file: a mailbox named "Readonly" may be listed and read by
# its owner but nothing put in it, for the tests of a server's NO [NOPERM].
plugin {{
  quota = maildir:User quota
  acl = vfile:{mail}/global-acl
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = home={mail}/%u
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Drafts {{
    special_use = \\Drafts
    auto = subscribe
  }}
  mailbox Sent {{
    special_use = \\Sent
    auto = subscribe
  }}
  mailbox Trash {{
    special_use = \\Trash
    auto = subscribe
  }}
  mailbox Junk {{
    special_use = \\Junk
    auto = subscribe
  }}
}}
protocol imap {{
  mail_max_userip_connections = 200
  imap_idle_notify_interval = 2 mins
}}
protocol lmtp {{
  postmaster_address = postmaster@example.test{lmtp_plugins}
}}{sieve}
lmtp_save_to_detail_mailbox = no
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}
  }}
}}
service auth {{
  user = root
}}
service auth-worker {{
  user = root
}}
service submission-login {{
  inet_listener submission {{
    address = 127.0.0.1
    port = {submission_port}
  }}
}}
# Dovecot's submission service hands mail to an SMTP relay (Postfix in a real installation;
# the tests' own SMTP sink here).
submission_relay_host = 127.0.0.1
submission_relay_port = {relay_port}
submission_relay_trusted = yes
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
"""


@dataclass
class Dovecot:
    root: Path
    users: dict[str, str] = field(default_factory=dict)
    #: Extra fields of a user's passwd-file line (``userdb_quota_rule=*:storage=1``).
    extra: dict[str, str] = field(default_factory=dict)
    imap_port: int = 0
    imaps_port: int = 0
    lmtp_port: int = 0
    submission_port: int = 0
    #: The SMTP server Dovecot's submission service relays to (0: none, sending fails).
    relay_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    mail: Path = Path()
    #: Where the maildirs go (None: the system's temp dir); the bench uses /dev/shm.
    mail_parent: Path | None = None
    #: Dovecot's mailbox format: "maildir" (the tests'; mailcow, iRedMail, Mail-in-a-Box) or
    #: "mdbox" (the benches' big mailboxes: Dovecot fills it quickly by doveadm import).
    mail_format: str = "maildir"

    @property
    def ca_file(self) -> Path:
        return self.root / "ca" / "ca.pem"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for sub in ("run", "state", "tls"):
            (self.root / sub).mkdir(exist_ok=True)
        # Dovecot refuses mail access as root: the maildirs belong to its own user, in a
        # directory of their own that user can reach (test temp dirs are 0700 root).
        self.mail = Path(tempfile.mkdtemp(prefix="natsync-dovecot-mail-", dir=self.mail_parent))
        self.mail.chmod(0o755)
        shutil.chown(self.mail, "dovecot", "dovecot")
        ca = init_ca(self.root / "ca", common_name="natsync test CA for Dovecot")
        ca.issue_server_cert(["localhost"], ["127.0.0.1"], self.root / "tls")
        shutil.copy(ca.cert_path, self.ca_file) if ca.cert_path != self.ca_file else None
        self.write_users()
        self.imap_port, self.imaps_port, self.lmtp_port = free_port(), free_port(), free_port()
        self.submission_port = free_port()
        # "Readonly": its owner may list and read it (l, r) but not insert (i): RFC 4314 §2.1.
        # "Kept": messages may be put in (i) but not flagged (s, w) nor deleted (t, e), as an
        # archive under retention. (In the mail folder: Dovecot's mail processes, running as
        # dovecot, must read it.)
        (self.mail / "global-acl").write_text("Readonly owner lr\nKept owner lri\n")
        sieve = sieve_available()
        if sieve:
            (self.mail / "sieve").mkdir()
            (self.mail / "sieve" / "sent-copy.sieve").write_text(SENT_COPY_SIEVE.format())
            shutil.chown(self.mail / "sieve", "dovecot", "dovecot")
        conf = self.root / "dovecot.conf"
        conf.write_text(
            CONF.format(
                root=self.root,
                mail=self.mail,
                mail_format=self.mail_format,
                imap_port=self.imap_port,
                imaps_port=self.imaps_port,
                lmtp_port=self.lmtp_port,
                submission_port=self.submission_port,
                relay_port=self.relay_port or free_port(),
                lmtp_plugins="\n  mail_plugins = $mail_plugins sieve" if sieve else "",
                sieve=SIEVE_CONF.format(mail=self.mail) if sieve else "",
            )
        )
        self.process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited: {self.log()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.imaps_port), timeout=0.5),
            ):
                return
            time.sleep(0.05)
        raise RuntimeError(f"dovecot did not listen: {self.log()}")

    def write_users(self) -> None:
        lines = "".join(
            f"{name}:{{PLAIN}}{pw}::::::{self.extra.get(name, '')}\n"
            for name, pw in self.users.items()
        )
        (self.root / "users").write_text(lines)

    def add_user(self, name: str, password: str) -> None:
        self.users[name] = password
        self.write_users()

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None
        shutil.rmtree(self.mail, ignore_errors=True)

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def imap(self, user: str) -> imaplib.IMAP4_SSL:
        """An IMAP client (Python's imaplib) logged in as *user*: the 'laptop' of the tests."""
        client = imaplib.IMAP4_SSL("127.0.0.1", self.imaps_port, ssl_context=self.tls_context())
        client.login(user, self.users[user])
        return client

    def deliver(self, rcpt: str, raw: bytes, sender: str = "sender@example.org") -> None:
        """Deliver *raw* to *rcpt* by LMTP, as Postfix would."""
        with smtplib.LMTP("127.0.0.1", self.lmtp_port) as lmtp:
            lmtp.sendmail(sender, [rcpt], raw)
