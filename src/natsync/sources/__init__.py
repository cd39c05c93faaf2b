"""Mailbox and PIM sources outside natsync's own store, mirrored into it (issue 25)."""
