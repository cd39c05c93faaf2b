"""The supervisor's /healthz document carries the certificate manager's state: what the cert
part's manager wrote to DATA_DIR/acme/status.json, with the days left; a certificate close to
expiry whose renewal fails turns the deployment "degraded" (503)."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from cryptography import x509

from natsync.cert.ca import init_ca
from natsync.cert.manager import CertificateManager, State
from natsync.deployment import load_deployment
from natsync.run.parts import manager_settings, public_cert_path
from natsync.run.supervisor import Supervisor


def _deployment(tmp_path: Path) -> Path:
    config = tmp_path / "natsync.toml"
    config.write_text(
        f"""
[server]
data_dir = "{tmp_path / "data"}"

[cert]
mode = "acme"
names = ["mail.example.test"]
# nothing listens on port 1: every order fails at once
acme_directory = "https://127.0.0.1:1/dir"
"""
    )
    return config


def test_healthz_shows_an_expiring_certificate_whose_renewal_fails(tmp_path: Path) -> None:
    config = _deployment(tmp_path)
    deployment = load_deployment(config)
    supervisor = Supervisor(config, deployment)
    assert supervisor.health()["cert"]["state"] == "starting"  # before the manager's step

    data = tmp_path / "data"
    ca = init_ca(data / "ca")
    cert_path = public_cert_path(deployment)
    ca.issue_server_cert(["mail.example.test"], [], cert_path.parent, basename="public")
    leaf = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
    near_expiry = leaf.not_valid_after_utc - dt.timedelta(days=1)
    manager = CertificateManager(manager_settings(deployment), clock=lambda: near_expiry)

    async def one_step() -> None:
        await manager.step()
        manager._save_status()

    asyncio.run(one_step())
    assert manager.status().state is State.EXPIRING

    doc = supervisor.health()
    cert = doc["cert"]
    assert doc["status"] == "degraded"
    assert cert["state"] == "expiring"
    assert cert["healthy"] is False
    assert cert["message"].startswith("EXPIRES")
    assert cert["not_after"] == leaf.not_valid_after_utc.isoformat()
    left = (leaf.not_valid_after_utc - dt.datetime.now(dt.UTC)).total_seconds() / 86400
    assert abs(cert["days_left"] - left) < 0.2
