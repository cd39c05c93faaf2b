"""`natsync run` gets its certificate by DNS-01 when ports 80 and 443 are closed from outside:
the file `natsync init --cert acme` writes, its [ddns] naming the zone's primary (real BIND 9,
RFC 2136 with TSIG) and ``ports_open = "none"`` in [cert]; ``challenge = "auto"`` picks dns-01
and says why, the cert part publishes the TXT record through the ddns provider's TxtPublisher,
pebble resolves it through that BIND, nothing answers on pebble's HTTP-01 or TLS-ALPN-01 port,
and the edge then serves pebble's certificate to a phone that syncs through it."""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import pytest

from natsync.store.api import FolderType
from tests.cert.acme_servers import ZONE, Bind, Pebble
from tests.cert.conftest import bind, pebble  # noqa: F401 - the fixtures this module uses
from tests.cli.test_run import (
    PASSWORD,
    SHUTDOWN_TIMEOUT,
    add_user,
    free_ports,
    nat,
    send_mail,
    start_run,
)
from tests.cli.test_run_acme import ORDER_TIMEOUT, _cert_health, _issuer, _phone_context


def test_run_obtains_the_certificate_by_dns01_with_ports_80_and_443_closed(
    pebble: Pebble,  # noqa: F811 - the fixture imported above
    bind: Bind,  # noqa: F811
    tmp_path: Path,
) -> None:
    from natsync.client import EASClient

    name = f"dns01-{uuid.uuid4().hex[:8]}.{ZONE}"
    edge, smtp, server, admin, http = free_ports(5)
    made = nat(
        "init", name, "-o", "natsync.toml", "--data-dir", "data", "--no-detect", "-y",
        "--cert", "acme", "--acme-directory", pebble.directory_url, "--acme-ca",
        str(pebble.ca_file), "--domain", "natsync.test", "--listen", "127.0.0.1",
        "--https-port", str(edge), "--smtp-port", str(smtp), "--server-port", str(server),
        "--http-port", str(http), "--admin-listen", f"127.0.0.1:{admin}",
        "--edge-admin-listen", "127.0.0.1:0", "--dns-server", f"127.0.0.1:{bind.port}",
        "--dns-zone", ZONE, "--tsig-key", str(bind.key_file), cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    config = tmp_path / "natsync.toml"
    text = config.read_text()
    assert 'challenge = "auto"' in text
    # The ISP blocks 80 and 443 inbound (nothing listens on pebble's validation ports either);
    # the ddns part looks for the public address only through a STUN server that is not there.
    text = text.replace("[cert]\n", '[cert]\nports_open = "none"\n')
    text = text.replace("[ddns]\n", '[ddns]\nsources = ["stun"]\nstun_servers = ["127.0.0.1:9"]\n')
    config.write_text(text)
    checked = nat("check", "-c", str(config), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    add_user(tmp_path)
    run = start_run(tmp_path, config, [edge, smtp, server, admin])
    proc = run.proc
    try:
        text = run.wait_log("cert: issued", timeout=ORDER_TIMEOUT)
        assert f"ordering a certificate for {name} from {pebble.directory_url} with dns-01" in text
        assert "a DNS updater is configured and ports 80 and 443 are closed from outside" in text
        assert "with http-01" not in text
        assert "with tls-alpn-01" not in text
        run.wait_log("certificates reloaded")
        assert "Pebble" in _issuer(edge, name)
        cert = _cert_health(run)
        assert cert["challenge"] == "dns-01"
        # The TXT record is gone again from the zone's primary.
        answer = dns.query.tcp(
            dns.message.make_query(f"_acme-challenge.{name}", dns.rdatatype.TXT),
            "127.0.0.1",
            port=bind.port,
            timeout=3,
        )
        assert not answer.answer

        send_mail(smtp, "certified by dns-01")

        async def phone_syncs() -> list[str]:
            async with EASClient(
                f"https://127.0.0.1:{edge}", "you", PASSWORD,
                ssl_context=_phone_context(tmp_path, pebble), device_id="DNS01PHONE",
            ) as phone:  # fmt: skip
                await phone.folder_sync()
                inbox = phone.folder(type=FolderType.INBOX).server_id
                result = await phone.sync(inbox)
                return [item.subject for item in result.added]

        assert asyncio.run(phone_syncs()) == ["certified by dns-01"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(SHUTDOWN_TIMEOUT) == 0
        assert proc.stdout is not None
        proc.stdout.close()
    assert "Traceback" not in run.log.read_text()


@pytest.fixture(autouse=True)
def _uses_bind(bind: object) -> None:  # noqa: F811 - pebble validates through it
    return None
