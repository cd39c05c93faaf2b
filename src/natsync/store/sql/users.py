"""Users, their passwords and settings."""

# S608: every SQL string here is built from this package's own constants, never from input;
# values always travel as bound parameters.
# ruff: noqa: S608

from __future__ import annotations

from datetime import datetime

from natsync.store.api import STANDARD_FOLDERS, Conflict, NotFound, User
from natsync.store.feed import hierarchy_key
from natsync.store.sql.base import TxnBase
from natsync.store.sql.rows import _USER_COLS, ROOT_PARENT, _to_us, _user


class UsersMixin(TxnBase):
    """Users: see the module docstring."""

    def add_user(
        self, name: str, email: str, display_name: str, password_hash: str, now: datetime
    ) -> User:
        taken = self._one(
            "SELECT name, email FROM users WHERE name = ? OR email = ?", (name, email)
        )
        if taken is not None:
            what = "name" if taken[0].casefold() == name.casefold() else "email address"
            raise Conflict(f"a user with the {what} {name if what == 'name' else email!r} exists")
        row = self._one(
            "INSERT INTO users (name, email, display_name, password_hash, created_at) "
            f"VALUES (?, ?, ?, ?, ?) RETURNING {_USER_COLS}",
            (name, email, display_name, password_hash, _to_us(now)),
        )
        user = _user(row)
        for folder_name, folder_type in STANDARD_FOLDERS:
            self.create_folder(user.id, ROOT_PARENT, folder_name, folder_type)
        return user

    def get_user(self, name: str) -> User | None:
        row = self._one(f"SELECT {_USER_COLS} FROM users WHERE name = ?", (name,))
        return None if row is None else _user(row)

    def get_user_by_email(self, email: str) -> User | None:
        row = self._one(f"SELECT {_USER_COLS} FROM users WHERE email = ?", (email,))
        return None if row is None else _user(row)

    def list_users(self) -> list[User]:
        rows = self._conn.execute(f"SELECT {_USER_COLS} FROM users ORDER BY name")
        return [_user(row) for row in rows]

    def login(self, name: str) -> tuple[User, str] | None:
        row = self._one(f"SELECT {_USER_COLS}, password_hash FROM users WHERE name = ?", (name,))
        if row is None and "@" in name:
            row = self._one(
                f"SELECT {_USER_COLS}, password_hash FROM users WHERE email = ?", (name,)
            )
        return None if row is None else (_user(row), str(row[5]))

    def password_hash(self, user_id: int) -> str:
        row = self._one("SELECT password_hash FROM users WHERE id = ?", (user_id,))
        if row is None:
            raise NotFound(f"user {user_id} does not exist")
        value: str = row[0]
        return value

    def set_password_hash(self, user_id: int, password_hash: str) -> None:
        if (
            self._conn.execute(
                "UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id)
            ).rowcount
            == 0
        ):
            raise NotFound(f"user {user_id} does not exist")

    def remove_user(self, user_id: int) -> None:
        folder_ids = [
            row[0]
            for row in self._conn.execute("SELECT id FROM folders WHERE user_id = ?", (user_id,))
        ]
        if self._conn.execute("DELETE FROM users WHERE id = ?", (user_id,)).rowcount == 0:
            raise NotFound(f"user {user_id} does not exist")
        self._forget_rows()
        # Waiting Pings of the removed user wake up and find their folders gone.
        self.changed.update(folder_ids)
        self.changed.add(hierarchy_key(user_id))

    def get_user_setting(self, user_id: int, key: str) -> str | None:
        return self._setting("user_settings", "user_id", user_id, key)

    def set_user_setting(self, user_id: int, key: str, value: str) -> None:
        self._require_user(user_id)
        self._set_setting("user_settings", "user_id", user_id, key, value)
