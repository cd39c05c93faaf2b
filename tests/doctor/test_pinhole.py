"""The doctor's IPv6 pinhole findings (natsync.doctor.pinhole) from evidence, one per state the
portmap part records or the router answers. The real router (miniupnpd) and a real `natsync run`
give the open, gone, removed and expired findings in tests/run/test_portmap_part.py."""

from __future__ import annotations

from dataclasses import replace

from natsync.doctor.evidence import PinholeEvidence, PinholeRecord
from natsync.doctor.findings import Severity
from natsync.doctor.pinhole import check_pinholes

NOW = 1_800_000_000.0
WANTED = ("443->443/tcp",)
OPEN = PinholeRecord(
    "443->443/tcp",
    method="upnp6",
    state="open",
    expires_at=NOW + 1800,
    renew_at=NOW + 600,
    unique_id=3,
    address="2a0e:97c0:77::2",
    router="no-packets",
    router_detail="CheckPinholeWorking: 709 NoPacketSent",
)
HOST6 = ("2a0e:97c0:77::2",)


def judge(record: PinholeRecord | None, host6: tuple[str, ...] | None = HOST6) -> tuple[str, str]:
    ev = PinholeEvidence(
        WANTED,
        "auto",
        records=(record,) if record else (),
        updated=NOW - 30,
        now=NOW,
        status_file="data/portmap/status.json",
    )
    (finding,) = check_pinholes(ev, host6)
    return finding.severity, finding.title


def test_an_open_pinhole_the_router_confirms() -> None:
    assert judge(OPEN) == (
        Severity.OK,
        "IPv6 pinhole for 443->443/tcp is open in the router's IPv6 firewall",
    )


def test_a_pcp_pinhole_is_judged_from_the_record_and_says_so() -> None:
    ev = PinholeEvidence(
        WANTED,
        "pcp6",
        records=(replace(OPEN, method="pcp6", router="", router_detail="", unique_id=None),),
        updated=NOW,
        now=NOW,
    )
    (finding,) = check_pinholes(ev, HOST6)
    assert finding.severity == Severity.OK
    assert any("without renewing it" in fact for fact in finding.evidence)


def test_missing_or_expired_pinholes_fail_with_their_reason() -> None:
    assert judge(replace(OPEN, router="gone")) == (
        Severity.FAIL,
        "IPv6 pinhole for 443->443/tcp missing: the router no longer has it",
    )
    assert judge(replace(OPEN, expires_at=NOW - 5, router="gone")) == (
        Severity.FAIL,
        "IPv6 pinhole for 443->443/tcp expired: nothing renews it",
    )
    assert judge(replace(OPEN, state="removed")) == (
        Severity.FAIL,
        "IPv6 pinhole for 443->443/tcp missing: removed when natsync run stopped",
    )
    assert judge(replace(OPEN, state="failed", detail="UPnP 606")) == (
        Severity.FAIL,
        "IPv6 pinhole for 443->443/tcp missing: the router did not open it",
    )
    assert judge(None) == (
        Severity.FAIL,
        "IPv6 pinhole for 443->443/tcp missing: not in the portmap part's record",
    )


def test_a_pinhole_on_an_old_prefix_fails() -> None:
    assert judge(OPEN, host6=("2a0e:97c0:99::2",)) == (
        Severity.FAIL,
        "IPv6 pinhole for 443->443/tcp opens an address this host no longer has",
    )


def test_warnings_renewal_failing_translated_port_no_record() -> None:
    assert judge(replace(OPEN, state="renew-failing", detail="UPnP 606"))[0] == Severity.WARN
    assert judge(replace(OPEN, state="skipped"))[1].endswith("not opened: the port is translated")
    nothing = PinholeEvidence(WANTED, "auto", now=NOW, status_file="s.json")
    (finding,) = check_pinholes(nothing, HOST6)
    assert finding.severity == Severity.WARN
    assert finding.title == "No record of the IPv6 pinholes: nothing holds them"
    assert "natsync run" in finding.fix
