"""Which codec serves which folder type: the one place the Sync command looks a class up.

This is where the data classes (natsync.classes) meet mail (natsync.mail): the Calendar codec
gets its ``after_client_write`` hook here, natsync.mail.itip's (a 16.x phone's meetings go out
as iTIP mail), so that classes never import mail.
"""

from __future__ import annotations

from dataclasses import replace

from natsync.classes import calendar, contacts, notes, tasks
from natsync.classes.codec import ClassCodec
from natsync.mail import itip
from natsync.store.api import FolderType

#: Every non-email class codec, with the hooks that need more than the class itself.
CODECS: tuple[ClassCodec, ...] = (
    replace(calendar.CODEC, after_client_write=itip.after_client_write),
    contacts.CODEC,
    tasks.CODEC,
    notes.CODEC,
)


def codec_for(folder_type: FolderType) -> ClassCodec | None:
    """The codec of the class a folder of *folder_type* holds; None for email folders."""
    for codec in CODECS:
        if folder_type in codec.folder_types:
            return codec
    return None
