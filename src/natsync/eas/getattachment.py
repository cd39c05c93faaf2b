"""GetAttachment (MS-ASCMD 2.2.1.7): the 12.1-era way to download an attachment, named by the
AttachmentName query parameter (our FileReference). The answer body is the attachment itself.
EAS 16.x removed the command (ItemOperations Fetch replaces it), so 16.x requests are refused.
"""

from __future__ import annotations

from natsync.eas.context import Context, Response
from natsync.eas.errors import HttpError
from natsync.eas.versions import V16_0


def handle(ctx: Context) -> Response:
    if ctx.version >= V16_0:
        raise HttpError(400, "GetAttachment does not exist in EAS 16.x; use ItemOperations")
    name = ctx.request.attachment_name
    if not name:
        raise HttpError(400, "GetAttachment needs the AttachmentName parameter")
    found = ctx.txn.get_attachment(ctx.user.id, name)
    if found is None:
        # MS-ASCMD 2.2.1.7: a missing attachment is answered with HTTP 500.
        raise HttpError(500, f"no attachment {name!r}")
    attachment, data = found
    return Response(
        body=data, content_type=attachment.content_type or "application/octet-stream", status=1
    )
