"""The SQL both store drivers run (SQLite's dialect; PostgreSQL overrides what differs).

``rows``: columns and row mapping; ``base``: the connection and modseq bumps; one module per area
of the transaction; ``txn``: :class:`~natsync.store.sql.txn.SqliteTxn`, the areas joined.
"""
