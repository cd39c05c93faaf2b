"""Realistic EAS documents built in code, for the benchmark, the fuzz seeds and tests.

Not used by the server: they exist so every check of the codec runs on messages shaped like real
traffic (many small text elements, a few large bodies, opaque blobs) without committing binary
fixtures. Deterministic: the same arguments give the same tree.
"""

from __future__ import annotations

import base64

from natsync.wbxml.tree import E, Element

_LOREM = (
    "Hello team, the quarterly numbers are in and look good. Please review the attached "
    "summary before Thursday's meeting; we will go through the open items, the budget for "
    "next year and the hiring plan. Grüße aus Berlin, and thanks for all the work. "
)


def email_item(i: int, body_chars: int = 420) -> Element:
    """One Sync Add of an email with the fields Exchange sends (MS-ASEMAIL 2.2.2)."""
    body = (_LOREM * (body_chars // len(_LOREM) + 1))[:body_chars]
    return E(
        "AirSync",
        "Add",
        E("AirSync", "ServerId", f"5:{i + 1}"),
        E(
            "AirSync",
            "ApplicationData",
            E("Email", "To", f'"User {i}" <user{i}@example.org>'),
            E("Email", "From", f'"Sender {i % 7}" <sender{i % 7}@example.com>'),
            E("Email", "Subject", f"Quarterly report #{i}: numbers, plans and next steps"),
            E("Email", "DateReceived", f"2026-11-{1 + i % 28:02d}T09:{i % 60:02d}:00.000Z"),
            E("Email", "DisplayTo", f"User {i}"),
            E("Email", "ThreadTopic", f"Quarterly report #{i}: numbers, plans and next steps"),
            E("Email", "Importance", 1),
            E("Email", "Read", i % 2),
            E(
                "AirSyncBase",
                "Body",
                E("AirSyncBase", "Type", 1),
                E("AirSyncBase", "EstimatedDataSize", len(body.encode())),
                E("AirSyncBase", "Truncated", 0),
                E("AirSyncBase", "Data", body),
            ),
            E("Email", "MessageClass", "IPM.Note"),
            E("Email", "InternetCPID", 65001),
            E("Email", "Flag"),
            E("Email", "ContentClass", "urn:content-classes:message"),
            E("AirSyncBase", "NativeBodyType", 1),
            E("Email2", "ConversationId", bytes((i * 7 + k) % 256 for k in range(16))),
            E("Email2", "ConversationIndex", bytes((i + k) % 256 for k in range(5))),
            E("Email", "Categories"),
        ),
    )


def sync_response(emails: int = 100, body_chars: int = 420) -> Element:
    """A Sync response delivering *emails* new messages into the Inbox (MS-ASCMD 2.2.1.21)."""
    commands = E("AirSync", "Commands", *(email_item(i, body_chars) for i in range(emails)))
    return E(
        "AirSync",
        "Sync",
        E(
            "AirSync",
            "Collections",
            E(
                "AirSync",
                "Collection",
                E("AirSync", "SyncKey", "{8c7e2b1a-4c1f-4f7e-9d57-2f0e0b9a1c11}2"),
                E("AirSync", "CollectionId", 5),
                E("AirSync", "Status", 1),
                commands,
            ),
        ),
    )


def item_operations_response(document_bytes: int = 1_000_000) -> Element:
    """An ItemOperations Fetch response carrying one attachment of about *document_bytes*.

    The attachment travels as base64 text in ItemOperations:Data, as MS-ASCMD 2.2.3.39.2 types
    it (a string), which is also what libwbxml expects; a binary attachment goes in a multipart
    response instead (MS-ASCMD 2.2.2.10).
    """
    attachment_bytes = document_bytes * 3 // 4
    blob = bytes((k * 31 + 7) % 256 for k in range(min(attachment_bytes, 4096)))
    raw = (blob * (attachment_bytes // max(len(blob), 1) + 1))[:attachment_bytes]
    data = base64.b64encode(raw).decode("ascii")
    return E(
        "ItemOperations",
        "ItemOperations",
        E("ItemOperations", "Status", 1),
        E(
            "ItemOperations",
            "Response",
            E(
                "ItemOperations",
                "Fetch",
                E("ItemOperations", "Status", 1),
                E("AirSyncBase", "FileReference", "5%3a12%3a0"),
                E(
                    "ItemOperations",
                    "Properties",
                    E("AirSyncBase", "ContentType", "application/pdf"),
                    E("ItemOperations", "Data", data),
                ),
            ),
        ),
    )


def small_documents() -> list[Element]:
    """A handful of small messages over many code pages (fuzz seeds, quick tests)."""
    return [
        E("FolderHierarchy", "FolderSync", E("FolderHierarchy", "SyncKey", "0")),
        E(
            "Ping",
            "Ping",
            E("Ping", "HeartbeatInterval", 480),
            E(
                "Ping",
                "Folders",
                E("Ping", "Folder", E("Ping", "Id", "5"), E("Ping", "Class", "Email")),
            ),
        ),
        E(
            "Provision",
            "Provision",
            E(
                "Provision",
                "Policies",
                E("Provision", "Policy", E("Provision", "PolicyType", "MS-EAS-Provisioning-WBXML")),
            ),
        ),
        E(
            "ComposeMail",
            "SendMail",
            E("ComposeMail", "ClientId", "c1"),
            E("ComposeMail", "SaveInSentItems"),
            E("ComposeMail", "Mime", b"From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n"),
        ),
        E(
            "Settings",
            "Settings",
            E(
                "Settings",
                "DeviceInformation",
                E("Settings", "Set", E("Settings", "Model", "Pixel"), E("Settings", "OS", "14")),
            ),
        ),
        E(
            "Search",
            "Search",
            E(
                "Search",
                "Store",
                E("Search", "Name", "GAL"),
                E("Search", "Query", "smith"),
                E("Search", "Options", E("Search", "Range", "0-9")),
            ),
        ),
        E(
            "Find",
            "Find",
            E("Find", "SearchId", "x"),
            E("Find", "ExecuteSearch", E("Find", "MailBoxSearchCriterion", E("Find", "Query"))),
        ),
        sync_response(emails=2, body_chars=40),
        item_operations_response(document_bytes=400),
    ]
