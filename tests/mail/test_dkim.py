"""natsync.mail.dkim and dns_records: keys on disk, the relay signing what it sends to a real
aiosmtpd smarthost, and dkimpy verifying the result against the public key served by a real
BIND from the zone lines records_for renders (the TXT split into 255-byte strings included)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import dkim
import dns.message
import dns.query
import dns.rdatatype
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from natsync.cli import main
from natsync.mail.dkim import (
    DkimError,
    DkimSigner,
    create_key,
    from_domain,
    load_key,
    load_keys,
)
from natsync.mail.dns_records import TXT_STRING_MAX, records_for, txt_strings
from natsync.mail.relay import Relay, SmartHost, deliver
from natsync.store.api import Store, User
from tests.ddns.servers import free_port
from tests.mail.test_relay import NOW, OUTGOING, Smarthost

DOMAIN = "example.test"
PUBLIC_NAME = "mail.example.test"

needs_named = pytest.mark.skipif(
    shutil.which("named") is None, reason="BIND (named) is not installed: apt-get install bind9"
)


@pytest.fixture
async def smarthost() -> AsyncIterator[Smarthost]:
    """A real aiosmtpd server on loopback recording what it accepted (as in test_relay)."""
    host = Smarthost()
    yield host
    await host.stop()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("dkim-data")
    create_key(directory, DOMAIN)
    return directory


@pytest.fixture(scope="module")
def signer_for_fuzz(data_dir: Path) -> tuple[DkimSigner, bytes]:
    """The signer of data_dir and its domain's TXT record (what DNS would answer)."""
    signer = DkimSigner.from_data_dir(data_dir)
    key = load_key(data_dir, DOMAIN)
    assert signer is not None
    assert key is not None
    return signer, key.record_text.encode()


@dataclass
class Zone:
    host: str
    port: int

    def txt(self, name: bytes, timeout: float = 5) -> bytes | None:
        """dkimpy's dnsfunc: the TXT record's strings joined (RFC 6376 3.6.2.2), asked of BIND."""
        query = dns.message.make_query(name.decode("ascii"), dns.rdatatype.TXT)
        answer = dns.query.udp(query, self.host, port=self.port, timeout=timeout)
        for rrset in answer.answer:
            for rdata in rrset:
                return b"".join(rdata.strings)
        return None


@pytest.fixture(scope="module")
def zone(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zone]:
    """BIND serving example.test with exactly the records records_for renders."""
    from natsync.lab.services import key_file_text, named_argv, named_conf, stop, wait_dns
    from natsync.lab.services import zone_text as soa_and_ns

    if shutil.which("named") is None:
        pytest.skip("BIND (named) is not installed: apt-get install bind9")
    directory = tmp_path_factory.mktemp("dkim-named")
    port = free_port()
    (directory / "ddns.key").write_text(key_file_text("unused", os.urandom(32)))
    (directory / "named.conf").write_text(
        named_conf(directory, "127.0.0.1", port, DOMAIN, "unused", ())
    )
    key = load_key(data_dir, DOMAIN)
    assert key is not None
    lines = [r.zone_line() for r in records_for(DOMAIN, PUBLIC_NAME, key.public_key_b64)]
    (directory / f"{DOMAIN}.zone").write_text(
        soa_and_ns(DOMAIN, [*lines, "ns1 IN A 127.0.0.53", "mail IN A 127.0.0.25"])
    )
    log = directory / "named.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(named_argv(directory), stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_dns("127.0.0.1", port, DOMAIN, proc, log, None)
        yield Zone("127.0.0.1", port)
    finally:
        stop(proc)


def test_a_new_key_is_private_and_never_replaced(tmp_path: Path) -> None:
    key = create_key(tmp_path, "Example.ORG", "s2026")
    assert key.path == tmp_path / "dkim" / "example.org" / "s2026.key"
    assert key.path.stat().st_mode & 0o777 == 0o600
    assert key.path.parent.stat().st_mode & 0o777 == 0o700
    assert key.private_pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    with pytest.raises(DkimError, match="choose another --selector"):
        create_key(tmp_path, "example.org", "s2026")
    assert load_key(tmp_path, "example.org", "s2026") == key
    assert load_key(tmp_path, "example.net") is None


def test_the_newest_selector_signs_during_a_rotation(tmp_path: Path) -> None:
    old = create_key(tmp_path, DOMAIN, "old")
    new = create_key(tmp_path, DOMAIN, "new")
    os.utime(old.path, (1_000_000, 1_000_000))
    assert load_keys(tmp_path)[DOMAIN].selector == new.selector


def test_bad_domains_and_selectors_are_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DkimError, match="not a domain name"):
        create_key(tmp_path, "not a domain")
    with pytest.raises(DkimError, match="not a DKIM selector"):
        create_key(tmp_path, DOMAIN, "bad_selector!")
    (tmp_path / "dkim" / "broken.test").mkdir(parents=True)
    (tmp_path / "dkim" / "broken.test" / "natsync.key").write_text("garbage")
    with pytest.raises(DkimError, match=r"natsync dkim create broken\.test"):
        load_keys(tmp_path)


def test_from_domain_takes_the_single_from_address() -> None:
    assert from_domain(OUTGOING) == DOMAIN
    assert from_domain(b"From: =?utf-8?q?A?= <a@Mixed.Case.test>\r\n\r\nx") == "mixed.case.test"
    assert from_domain(b"From: a@x.test, b@y.test\r\n\r\nx") is None
    assert from_domain(b"From: a@x.test\r\nFrom: b@y.test\r\n\r\nx") is None
    assert from_domain(b"To: a@x.test\r\n\r\nno from") is None


def test_zone_lines_split_the_dkim_key_into_255_byte_strings(data_dir: Path) -> None:
    key = load_key(data_dir, DOMAIN)
    assert key is not None
    records = records_for(DOMAIN, PUBLIC_NAME, key.public_key_b64, spf_include=("_spf.sh.test",))
    by_name = {(r.name, r.rtype): r for r in records}
    assert by_name[("example.test.", "MX")].rdata() == "10 mail.example.test."
    assert by_name[("example.test.", "TXT")].value == "v=spf1 mx include:_spf.sh.test ~all"
    assert by_name[("_dmarc.example.test.", "TXT")].value.startswith("v=DMARC1; p=none;")
    dkim_record = by_name[("natsync._domainkey.example.test.", "TXT")]
    parts = txt_strings(dkim_record.value)
    assert len(parts) == 2
    assert all(len(p) <= TXT_STRING_MAX for p in parts)
    assert "".join(parts) == dkim_record.value
    assert records_for(DOMAIN, PUBLIC_NAME, None)[2].name == "_dmarc.example.test."


@needs_named
async def test_relayed_mail_is_signed_and_verifies_against_the_published_key(
    store: Store, alice: User, smarthost: Smarthost, data_dir: Path, zone: Zone
) -> None:
    signer = DkimSigner.from_data_dir(data_dir)
    assert signer is not None
    assert signer.domains == (DOMAIN,)
    port = await smarthost.start()
    relay = Relay(store, SmartHost("127.0.0.1", port, starttls=False, timeout=5), dkim=signer)
    relay.start()
    try:
        await deliver(store, alice.email, ["carol@remote.example"], OUTGOING, NOW, [DOMAIN])
        relay.kick()
        await asyncio.wait_for(smarthost.arrived.wait(), timeout=5)
    finally:
        await relay.aclose()
    [envelope] = smarthost.received
    received = envelope.original_content
    assert received is not None
    assert received.startswith(b"DKIM-Signature: v=1;")
    assert b" d=example.test;" in received
    assert b" s=natsync;" in received
    assert dkim.verify(received, dnsfunc=zone.txt) is True
    # A body changed on the way no longer verifies: the signature covers it.
    tampered = received.replace(b"Hello Carol", b"Hello Mallory")
    assert dkim.verify(tampered, dnsfunc=zone.txt) is False


def test_a_domain_without_a_key_leaves_unsigned(data_dir: Path) -> None:
    signer = DkimSigner.from_data_dir(data_dir)
    assert signer is not None
    other = OUTGOING.replace(b"alice@example.test", b"alice@elsewhere.test")
    assert signer.sign(other) == other
    assert DkimSigner.from_data_dir(data_dir / "absent") is None


@needs_named
def test_cli_records_are_what_the_zone_serves(data_dir: Path, zone: Zone) -> None:
    result = CliRunner().invoke(
        main,
        ["dkim", "records", DOMAIN, "--public-name", PUBLIC_NAME, "--data-dir", str(data_dir)],
    )
    assert result.exit_code == 0, result.output
    zone_lines = [line for line in result.output.splitlines() if not line.startswith(";")]
    assert len(zone_lines) == 4
    served = zone.txt(b"natsync._domainkey.example.test.")
    dkim_line = next(line for line in zone_lines if "_domainkey" in line)
    assert served is not None
    assert served.decode() in dkim_line.replace('" "', "")
    as_json = CliRunner().invoke(
        main,
        [
            *("dkim", "records", DOMAIN, "--public-name", PUBLIC_NAME),
            *("--data-dir", str(data_dir), "--json"),
        ],
    )
    assert [r["type"] for r in json.loads(as_json.output)] == ["MX", "TXT", "TXT", "TXT"]


def test_cli_create_then_list(tmp_path: Path) -> None:
    runner = CliRunner()
    created = runner.invoke(main, ["dkim", "create", "example.org", "--data-dir", str(tmp_path)])
    assert created.exit_code == 0, created.output
    assert 'natsync._domainkey.example.org. 3600 IN TXT "v=DKIM1; k=rsa; p=' in created.output
    again = runner.invoke(main, ["dkim", "create", "example.org", "--data-dir", str(tmp_path)])
    assert again.exit_code == 1
    assert "Traceback" not in again.output
    assert "choose another --selector" in again.output
    listed = runner.invoke(main, ["dkim", "list", "--data-dir", str(tmp_path), "--json"])
    [entry] = json.loads(listed.output)
    assert entry["domain"] == "example.org"
    assert entry["selector"] == "natsync"
    missing = runner.invoke(main, ["dkim", "records", "example.org", "--data-dir", str(tmp_path)])
    assert missing.exit_code == 2
    assert "--public-name" in missing.output


@needs_named
async def test_natsync_server_signs_with_the_keys_of_its_data_dir(
    tmp_path: Path, smarthost: Smarthost, zone: Zone, data_dir: Path, alice_password_hash: str
) -> None:
    """The hook as deployed: `natsync server` (and `natsync run`'s server part) load the keys
    of server.data_dir into the relay; what reaches the smarthost verifies."""
    import os
    import signal

    from natsync.config import ServerConfig
    from natsync.run.serve import serve
    from natsync.store import open_store, store_path
    from tests.conftest import ALICE_DISPLAY_NAME, ALICE_EMAIL, ALICE_NAME, CREATED_AT

    deployment = tmp_path / "data"
    shutil.copytree(data_dir / "dkim", deployment / "dkim")
    store = open_store(store_path(deployment))
    try:
        user = ALICE_NAME, ALICE_EMAIL, ALICE_DISPLAY_NAME, alice_password_hash, CREATED_AT
        await store.run(lambda txn: txn.add_user(*user))
        await deliver(store, ALICE_EMAIL, ["carol@remote.example"], OUTGOING, NOW, [DOMAIN])
    finally:
        await store.aclose()
    port = await smarthost.start()
    config = ServerConfig(
        host="127.0.0.1", port=0, data_dir=deployment, smarthost=f"127.0.0.1:{port}"
    )
    server = asyncio.create_task(serve(config))
    try:  # the relay's first round at start sends what is queued
        await asyncio.wait_for(smarthost.arrived.wait(), timeout=10)
    finally:
        os.kill(os.getpid(), signal.SIGTERM)  # serve's own handler: a clean stop
        await asyncio.wait_for(server, timeout=10)
    [envelope] = smarthost.received
    assert envelope.original_content is not None
    assert dkim.verify(envelope.original_content, dnsfunc=zone.txt) is True


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    head=st.lists(
        st.tuples(
            st.sampled_from(["From", "To", "Subject", "DKIM-Signature", "X-Odd", "from"]),
            st.one_of(
                st.binary(max_size=60),
                st.sampled_from(
                    [b"alice@example.test", b"A <alice@example.test>", b"=?x?q?\xff?="]
                ),
            ),
        ),
        max_size=6,
    ),
    body=st.binary(max_size=200),
)
def test_signing_never_raises_on_what_a_phone_may_send(
    signer_for_fuzz: tuple[DkimSigner, bytes], head: list[tuple[str, bytes]], body: bytes
) -> None:
    """Whatever bytes are queued, the relay gets bytes back: signed, or as they were."""
    raw = b"".join(name.encode() + b": " + value + b"\r\n" for name, value in head)
    raw += b"\r\n" + body
    assert isinstance(from_domain(raw), str | None)
    signer, record = signer_for_fuzz
    signed = signer.sign(raw)
    assert signed == raw or signed.startswith(b"DKIM-Signature:")
    event("signed" if signed != raw else "left as it was")
    if from_domain(raw) == DOMAIN and signed != raw:  # what was signed verifies
        assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: record)
