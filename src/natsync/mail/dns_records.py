"""The DNS records a mail domain needs so that mail comes in and mail that leaves is accepted:
MX (RFC 5321 5.1), SPF (RFC 7208), DKIM (RFC 6376 3.6) and DMARC (RFC 7489 6.3).

Pure: a domain, the public name, the DKIM public key in, records out — rendered as zone-file
lines (what BIND and most DNS providers' "import" take) or as data for ``--json``.
``natsync init`` prints them for each mail domain; ``natsync dkim records DOMAIN`` prints them
again at any time.

Why each record: MX sends the domain's mail to the public name; SPF names the hosts allowed to
send for it (``mx``: the public name, which is where natsync sends from when it delivers
directly; add the smarthost's SPF with ``spf_include``); DKIM publishes the key the relay signs
with (:mod:`natsync.mail.dkim`); DMARC tells receivers the domain authenticates its mail and
where to send reports. Gmail and Yahoo require SPF or DKIM for all senders, and DMARC for bulk
senders, since 2024; Microsoft likewise since 2025.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Longest character-string in a TXT record (RFC 1035 3.3: one length octet). A 2048-bit DKIM
#: key (~400 characters) is therefore published as several strings, joined by the verifier
#: (RFC 6376 3.6.2.2).
TXT_STRING_MAX = 255
#: TTL proposed for the records: an hour, short enough to correct a mistake the same day.
DEFAULT_TTL = 3600
#: MX preference: the only exchanger of the domain.
MX_PREFERENCE = 10
#: DMARC policy to start with: "none" reports without rejecting; tighten to "quarantine" once
#: the reports show every legitimate sender aligned (RFC 7489 6.3, "p").
DMARC_POLICY = "none"


@dataclass(frozen=True, slots=True)
class DnsRecord:
    """One record: ``name`` absolute (with the final dot), ``value`` as the TXT text or the
    RDATA in presentation form."""

    name: str
    rtype: str
    value: str
    purpose: str
    ttl: int = DEFAULT_TTL

    def rdata(self) -> str:
        """The RDATA as a zone file writes it (TXT split into quoted strings of <= 255)."""
        if self.rtype != "TXT":
            return self.value
        return " ".join(f'"{part}"' for part in txt_strings(self.value))

    def zone_line(self) -> str:
        return f"{self.name} {self.ttl} IN {self.rtype} {self.rdata()}"

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "type": self.rtype,
            "ttl": self.ttl,
            "value": self.value,
            "rdata": self.rdata(),
            "purpose": self.purpose,
        }


def txt_strings(text: str) -> list[str]:
    """*text* cut into TXT character-strings (quotes and backslashes are never in our text)."""
    return [text[i : i + TXT_STRING_MAX] for i in range(0, len(text), TXT_STRING_MAX)] or [""]


def _absolute(name: str) -> str:
    return name.rstrip(".").lower() + "."


def dkim_record(
    domain: str, selector: str, dkim_public_key: str, ttl: int = DEFAULT_TTL
) -> DnsRecord:
    """The TXT record publishing a DKIM public key (RFC 6376 3.6.1, 3.6.2.1)."""
    return DnsRecord(
        f"{selector}._domainkey.{_absolute(domain)}",
        "TXT",
        f"v=DKIM1; k=rsa; p={dkim_public_key}",
        "DKIM: the key natsync signs outgoing mail with",
        ttl,
    )


def records_for(
    domain: str,
    public_name: str,
    dkim_public_key: str | None,
    *,
    selector: str = "natsync",
    spf_include: tuple[str, ...] = (),
    dmarc_report: str | None = None,
    ttl: int = DEFAULT_TTL,
) -> list[DnsRecord]:
    """The MX, SPF, DKIM and DMARC records of *domain* whose mail server is *public_name*.

    *dkim_public_key* is the ``p=`` value (:attr:`natsync.mail.dkim.DkimKey.public_key_b64`), or
    None when no key exists yet (the DKIM record is then left out). *spf_include* names the
    SPF records of a smarthost that sends for the domain (e.g. ``"_spf.provider.example"``).
    DMARC reports go to *dmarc_report* (default ``postmaster@domain``, which RFC 5321 4.5.1
    requires to exist anyway).
    """
    zone = _absolute(domain)
    bare = zone.rstrip(".")
    includes = "".join(f" include:{name}" for name in spf_include)
    report = dmarc_report or f"postmaster@{bare}"
    records = [
        DnsRecord(
            zone,
            "MX",
            f"{MX_PREFERENCE} {_absolute(public_name)}",
            f"mail for {bare} goes to {public_name.rstrip('.')}",
            ttl,
        ),
        DnsRecord(
            zone,
            "TXT",
            f"v=spf1 mx{includes} ~all",
            "SPF: "
            + ("the MX host and the smarthost send" if spf_include else "the MX host sends")
            + " for it",
            ttl,
        ),
    ]
    if dkim_public_key is not None:
        records.append(dkim_record(domain, selector, dkim_public_key, ttl))
    records.append(
        DnsRecord(
            f"_dmarc.{zone}",
            "TXT",
            f"v=DMARC1; p={DMARC_POLICY}; rua=mailto:{report}",
            "DMARC: receivers check SPF/DKIM alignment and report to " + report,
            ttl,
        )
    )
    return records
