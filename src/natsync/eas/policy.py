"""The security policy we hand devices: the EASProvisionDoc of MS-ASPROV 2.2.2.27.

Settings are data — (name, default, first version that knows it) — not code, so the config file
can override any of them by name and the document is built in one loop. The defaults ask for
nothing a personal phone would refuse: no PIN required, attachments allowed, HTML mail allowed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from natsync.base import provision
from natsync.eas.versions import Version
from natsync.wbxml.tree import Element

NS = "Provision"

#: MS-ASPROV 2.2.2.27 child elements of EASProvisionDoc, in schema order, with our defaults and
#: the version that introduced each (older clients are not sent settings they don't know). The
#: names and defaults are the table in natsync.base.provision (the config checks
#: ``[server.policy]`` against it without importing the protocol).
SETTINGS: tuple[tuple[str, int | str, Version], ...] = tuple(
    (name, default, Version(*since)) for name, default, since in provision.SETTINGS
)

#: The PolicyType every version since 12.0 uses (MS-ASPROV 2.2.2.45).
POLICY_TYPE = "MS-EAS-Provisioning-WBXML"


def provision_doc(version: Version, overrides: Mapping[str, int | str] | None = None) -> Element:
    """The EASProvisionDoc element for a client speaking *version*."""
    doc = Element(NS, "EASProvisionDoc")
    merged = dict(overrides or {})
    for name, default, since in SETTINGS:
        if version < since:
            continue
        value = merged.get(name, default)
        if name in provision.LIST_SETTINGS or value == "":
            doc.append(Element(NS, name))
        else:
            doc.add(NS, name, value)
    return doc


#: Device setting holding the fingerprint of the policy the device acknowledged.
ACKED_POLICY_SETTING = "policy.fingerprint"


def fingerprint(overrides: Mapping[str, int | str] | None) -> str:
    """Identifies the policy in force: when the configuration changes it, devices that
    acknowledged an older one are asked to provision again (MS-ASCMD 2.2.2 code 143)."""
    text = json.dumps(sorted((overrides or {}).items()), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
