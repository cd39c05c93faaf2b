"""Which codec serves which folder type: the one place the Sync command looks a class up."""

from __future__ import annotations

from natsync.classes import calendar, contacts, notes, tasks
from natsync.classes.codec import ClassCodec
from natsync.store.api import FolderType

#: Every non-email class codec. Each class module adds its ``CODEC`` here.
CODECS: tuple[ClassCodec, ...] = (calendar.CODEC, contacts.CODEC, tasks.CODEC, notes.CODEC)


def codec_for(folder_type: FolderType) -> ClassCodec | None:
    """The codec of the class a folder of *folder_type* holds; None for email folders."""
    for codec in CODECS:
        if folder_type in codec.folder_types:
            return codec
    return None
