"""natsync.device.profile and `natsync device profile`: the .mobileconfig is a property list
whose every key is one Apple documents, with the documented type, and whose account, read back
the way a phone reads it (Host, SSL, UserName, the CA of the root payload), provisions and
syncs against a real natsync server over TLS."""

from __future__ import annotations

import json
import plistlib
import re
import ssl
from pathlib import Path

from click.testing import CliRunner
from cryptography import x509

from natsync.cert.ca import init_ca
from natsync.cli import main
from natsync.client import EASClient
from natsync.device.profile import Account, android_settings, profile
from tests.e2e.deployment import PASSWORD, USER, deployment

#: Keys and types from Apple's Device Management reference (github.com/apple/device-management,
#: mdm/profiles: TopLevel.yaml, CommonPayloadKeys.yaml, com.apple.eas.account.yaml,
#: com.apple.security.root.yaml): the subset a profile of ours may use, with each key's type.
TOP_LEVEL = {
    "PayloadIdentifier": str,
    "PayloadUUID": str,
    "PayloadType": str,
    "PayloadVersion": int,
    "PayloadContent": list,
    "PayloadDescription": str,
    "PayloadDisplayName": str,
    "PayloadOrganization": str,
    "PayloadRemovalDisallowed": bool,
}
COMMON = {
    "PayloadIdentifier": str,
    "PayloadUUID": str,
    "PayloadType": str,
    "PayloadVersion": int,
    "PayloadDescription": str,
    "PayloadDisplayName": str,
    "PayloadOrganization": str,
}
EAS_ACCOUNT = {
    **COMMON,
    "EmailAddress": str,
    "Host": str,
    "SSL": bool,
    "UserName": str,
    "Password": str,
    "OAuth": bool,
    "PayloadCertificateUUID": str,
    "MailNumberOfPastDaysToSync": int,
    "PreventMove": bool,
    "PreventAppSheet": bool,
}
ROOT = {**COMMON, "PayloadCertificateFileName": str, "PayloadContent": bytes}
REQUIRED = {"PayloadIdentifier", "PayloadUUID", "PayloadType", "PayloadVersion"}
#: Apple's format for payload UUIDs (com.apple.eas.account.yaml, PayloadCertificateUUID).
UUID_FORMAT = r"^[0-9A-Za-z]{8}-[0-9A-Za-z]{4}-[0-9A-Za-z]{4}-[0-9A-Za-z]{4}-[0-9A-Za-z]{12}$"


def check_keys(payload: dict[str, object], documented: dict[str, type]) -> None:
    for key, value in payload.items():
        assert key in documented, f"{key} is not a documented key"
        assert type(value) is documented[key], f"{key}: {type(value).__name__}"
    assert set(payload) >= REQUIRED
    assert payload["PayloadVersion"] == 1


def test_the_profile_uses_only_documented_keys_with_their_types(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ca")
    account = Account("ann", "ann@example.org", "Ann Example", "mail.example.org")
    loaded = plistlib.loads(profile(account, ca.cert))
    check_keys(loaded, TOP_LEVEL)
    assert loaded["PayloadType"] == "Configuration"
    root, eas = loaded["PayloadContent"]
    check_keys(root, ROOT)
    check_keys(eas, EAS_ACCOUNT)
    assert root["PayloadType"] == "com.apple.security.root"
    assert x509.load_der_x509_certificate(root["PayloadContent"]) == ca.cert
    assert eas["PayloadType"] == "com.apple.eas.account"
    assert (eas["Host"], eas["SSL"], eas["UserName"], eas["EmailAddress"]) == (
        "mail.example.org",
        True,
        "ann",
        "ann@example.org",
    )
    assert "Password" not in eas  # Apple: only in encrypted profiles; the phone asks instead
    uuids = [p["PayloadUUID"] for p in (loaded, root, eas)]
    assert all(re.match(UUID_FORMAT, u) for u in uuids)
    assert len(set(uuids)) == 3
    identifiers = [p["PayloadIdentifier"] for p in (loaded, root, eas)]
    assert len(set(identifiers)) == 3  # unique within the profile (CommonPayloadKeys)
    # Made again: the same identifiers, so installing it replaces the account, not adds one.
    assert plistlib.loads(profile(account, ca.cert)) == loaded
    without_ca = plistlib.loads(profile(account))
    assert [p["PayloadType"] for p in without_ca["PayloadContent"]] == ["com.apple.eas.account"]


def test_android_settings_name_the_server_and_the_ca_step() -> None:
    account = Account("ann", "ann@example.org", "Ann", "mail.example.org", 8443)
    fields = dict(android_settings(account, "natsync cert export-ca --format der -o ca.crt"))
    assert fields["Server"] == "mail.example.org"
    assert fields["Port"] == "8443"
    assert fields["Username"] == "ann"
    assert "export-ca --format der" in fields["First"]
    assert "First" not in dict(android_settings(account, None))


async def test_the_profile_provisions_and_syncs_against_a_real_server(tmp_path: Path) -> None:
    async with deployment(tmp_path) as live:
        port = int(live.url.rsplit(":", 1)[1])
        out = tmp_path / "ann.mobileconfig"
        store_file = tmp_path / "natsync.sqlite3"
        result = CliRunner().invoke(
            main,
            [
                *("device", "profile", USER, "-o", str(out), "--host", "localhost"),
                *("--port", str(port), "--ca-file", str(live.ca_file)),
                *("--store", str(store_file), "--json"),
            ],
        )
        assert result.exit_code == 0, result.output
        said = json.loads(result.output)
        assert said["host"] == f"localhost:{port}"
        assert said["android"]["Port"] == str(port)
        root, eas = plistlib.loads(out.read_bytes())["PayloadContent"]
        # What the phone does with it: trust the root payload, connect to Host over TLS (SSL),
        # log in as UserName with the password it asked for.
        trust = ssl.create_default_context(cadata=root["PayloadContent"])
        scheme = "https" if eas["SSL"] else "http"
        async with EASClient(
            f"{scheme}://{eas['Host']}", eas["UserName"], PASSWORD, ssl_context=trust
        ) as phone:
            await phone.provision()
            folders = await phone.folder_sync()
        assert any(f.display_name == "Inbox" for f in folders.added)


def test_cli_mistakes_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    no_host = runner.invoke(main, ["device", "profile", "ann", "--data-dir", str(tmp_path)])
    assert no_host.exit_code == 2
    assert "--host" in no_host.output
    no_store = runner.invoke(
        main, ["device", "profile", "ann", "--host", "h.example", "--data-dir", str(tmp_path)]
    )
    assert no_store.exit_code == 1
    assert "Traceback" not in no_store.output
    assert "no store" in no_store.output


def test_cli_takes_name_store_and_ca_from_the_deployment_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    init_ca(data / "ca")  # a private CA in the data directory: trusted by the profile
    config = tmp_path / "natsync.toml"
    config.write_text(f'[server]\npublic_name = "mail.example.org"\ndata_dir = "{data}"\n')
    runner = CliRunner()
    added = runner.invoke(
        main,
        ["user", "add", "ann", "--email", "ann@example.org", "--password", "long-password"],
        env={"NATSYNC_DATA_DIR": str(data)},
    )
    assert added.exit_code == 0, added.output
    out = tmp_path / "ann.mobileconfig"
    made = runner.invoke(main, ["device", "profile", "ann", "-c", str(config), "-o", str(out)])
    assert made.exit_code == 0, made.output
    assert f"with the CA {data / 'ca' / 'ca.pem'}" in made.output
    assert "Certificate Trust Settings" in made.output
    root, eas = plistlib.loads(out.read_bytes())["PayloadContent"]
    assert eas["Host"] == "mail.example.org"
    assert root["PayloadType"] == "com.apple.security.root"
    public = runner.invoke(
        main, ["device", "profile", "ann", "-c", str(config), "-o", str(out), "--no-ca"]
    )
    assert public.exit_code == 0, public.output
    assert len(plistlib.loads(out.read_bytes())["PayloadContent"]) == 1
