"""ResolveRecipients (MS-ASCMD 2.2.1.15) against our local users: by address, login name or
a part of the display name. Certificates and availability are not offered (no Options served).
"""

from __future__ import annotations

from natsync.eas.context import Context, Response
from natsync.eas.errors import EasError
from natsync.eas.status import ResolveStatus as S
from natsync.store.api import User
from natsync.wbxml import E

NS = "ResolveRecipients"
#: Names one request may resolve (MS-ASCMD 2.2.3.172: at most 100 To elements).
MAX_TO = 100
#: Candidates returned per ambiguous name.
MAX_AMBIGUOUS = 20


def _match(users: list[User], name: str) -> list[User]:
    wanted = name.strip().lower()
    exact = [u for u in users if wanted in (u.email.lower(), u.name.lower())]
    if exact:
        return exact
    return [u for u in users if wanted and wanted in u.display_name.lower()]


def handle(ctx: Context) -> Response:
    body = ctx.body
    if body is None or body.tag != "ResolveRecipients" or body.namespace != NS:
        raise EasError("ResolveRecipients needs a body", status=S.PROTOCOL_ERROR)
    names = [el.text() for el in body.findall("To", NS)]
    if not names or len(names) > MAX_TO:
        raise EasError("ResolveRecipients needs 1..100 To elements", status=S.PROTOCOL_ERROR)
    users = ctx.txn.list_users()
    root = E(NS, "ResolveRecipients", E(NS, "Status", S.SUCCESS))
    for name in names:
        found = _match(users, name)[:MAX_AMBIGUOUS]
        status = S.SUCCESS if len(found) == 1 else S.AMBIGUOUS if found else S.NOT_RESOLVED
        response = E(NS, "Response", E(NS, "To", name), E(NS, "Status", status))
        response.add(NS, "RecipientCount", len(found))
        for u in found:
            response.append(
                E(
                    NS,
                    "Recipient",
                    E(NS, "Type", 1),  # 1: from the GAL (our user list)
                    E(NS, "DisplayName", u.display_name or u.name),
                    E(NS, "EmailAddress", u.email),
                )
            )
        root.append(response)
    return Response.of(root, status=S.SUCCESS)
