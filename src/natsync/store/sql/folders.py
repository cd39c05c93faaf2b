"""Folders: the hierarchy (server ids never reused, FolderSync's modseq) and emptying one."""

# S608: every SQL string here is built from this package's own constants, never from input;
# values always travel as bound parameters.
# ruff: noqa: S608

from __future__ import annotations

from natsync.store.api import STANDARD_FOLDERS, Conflict, Folder, FolderType, NotFound
from natsync.store.sql.base import TxnBase
from natsync.store.sql.rows import _FOLDER_COLS, ROOT_PARENT, _folder


class FoldersMixin(TxnBase):
    """Folders: see the module docstring."""

    def list_folders(self, user_id: int) -> list[Folder]:
        rows = self._conn.execute(
            f"SELECT {_FOLDER_COLS} FROM folders WHERE user_id = ? ORDER BY id", (user_id,)
        )
        return [_folder(row) for row in rows]

    def get_folder(self, user_id: int, server_id: str) -> Folder | None:
        row = self._one(
            f"SELECT {_FOLDER_COLS} FROM folders WHERE user_id = ? AND server_id = ?",
            (user_id, server_id),
        )
        return None if row is None else _folder(row)

    def get_folder_by_id(self, folder_id: int) -> Folder | None:
        """The folder by the store's id (an addition to the Txn protocol)."""
        row = self._one(f"SELECT {_FOLDER_COLS} FROM folders WHERE id = ?", (folder_id,))
        return None if row is None else _folder(row)

    def folder_by_type(self, user_id: int, folder_type: FolderType) -> Folder:
        row = self._one(
            f"SELECT {_FOLDER_COLS} FROM folders WHERE user_id = ? AND type = ? ORDER BY id",
            (user_id, int(folder_type)),
        )
        if row is None:
            raise NotFound(f"user {user_id} has no folder of type {FolderType(folder_type).name}")
        return _folder(row)

    def _check_parent(self, user_id: int, parent_server_id: str) -> None:
        if parent_server_id != ROOT_PARENT and self.get_folder(user_id, parent_server_id) is None:
            raise NotFound(f"parent folder {parent_server_id!r} does not exist")

    def _check_name_free(
        self, user_id: int, parent_server_id: str, name: str, except_id: int | None = None
    ) -> None:
        row = self._one(
            "SELECT id FROM folders WHERE user_id = ? AND parent_server_id = ? "
            "AND display_name = ?",
            (user_id, parent_server_id, name),
        )
        if row is not None and row[0] != except_id:
            raise Conflict(f"a folder named {name!r} already exists there")

    def create_folder(
        self, user_id: int, parent_server_id: str, name: str, folder_type: FolderType
    ) -> Folder:
        if not name.strip():
            raise Conflict("a folder needs a name")
        row = self._one(
            "UPDATE users SET next_folder_number = next_folder_number + 1 WHERE id = ? "
            "RETURNING next_folder_number - 1",
            (user_id,),
        )
        if row is None:
            raise NotFound(f"user {user_id} does not exist")
        self._check_parent(user_id, parent_server_id)
        self._check_name_free(user_id, parent_server_id, name)
        created = self._one(
            "INSERT INTO folders (user_id, server_id, parent_server_id, display_name, type) "
            f"VALUES (?, ?, ?, ?, ?) RETURNING {_FOLDER_COLS}",
            (user_id, str(row[0]), parent_server_id, name, int(folder_type)),
        )
        self._bump_hierarchy(user_id)
        return _folder(created)

    def _descendants(self, user_id: int, server_id: str) -> list[tuple[int, str]]:
        """(id, server id) of every folder below *server_id*, nearest first."""
        rows = self._conn.execute(
            "WITH RECURSIVE below(id, server_id) AS ("
            " SELECT id, server_id FROM folders WHERE user_id = ? AND parent_server_id = ?"
            " UNION ALL SELECT f.id, f.server_id FROM folders f JOIN below b"
            " ON f.user_id = ? AND f.parent_server_id = b.server_id"
            ") SELECT id, server_id FROM below",
            (user_id, server_id, user_id),
        )
        return [(row[0], row[1]) for row in rows]

    def update_folder(
        self, user_id: int, server_id: str, parent_server_id: str, name: str
    ) -> Folder:
        folder = self.get_folder(user_id, server_id)
        if folder is None:
            raise NotFound(f"folder {server_id!r} does not exist")
        if folder.type in {t for _, t in STANDARD_FOLDERS}:
            raise Conflict(f"{folder.display_name} is a standard folder and cannot be changed")
        if not name.strip():
            raise Conflict("a folder needs a name")
        self._check_parent(user_id, parent_server_id)
        if parent_server_id == server_id or parent_server_id in {
            sid for _, sid in self._descendants(user_id, server_id)
        }:
            raise Conflict("a folder cannot be moved into itself or one of its subfolders")
        self._check_name_free(user_id, parent_server_id, name, except_id=folder.id)
        row = self._one(
            "UPDATE folders SET parent_server_id = ?, display_name = ? WHERE id = ? "
            f"RETURNING {_FOLDER_COLS}",
            (parent_server_id, name, folder.id),
        )
        self._bump_hierarchy(user_id)
        return _folder(row)

    def delete_folder(self, user_id: int, server_id: str) -> None:
        folder = self.get_folder(user_id, server_id)
        if folder is None:
            raise NotFound(f"folder {server_id!r} does not exist")
        if folder.type in {t for _, t in STANDARD_FOLDERS}:
            raise Conflict(f"{folder.display_name} is a standard folder and cannot be deleted")
        doomed = [folder.id, *(fid for fid, _ in self._descendants(user_id, server_id))]
        among, values = self._any(doomed)
        self._conn.execute(f"DELETE FROM folders WHERE id {among}", (values,))
        for folder_id in doomed:
            self._folders.pop(folder_id, None)
            self._bumped.pop(folder_id, None)
        self.changed.update(doomed)
        self._bump_hierarchy(user_id)

    def hierarchy_modseq(self, user_id: int) -> int:
        row = self._one("SELECT hierarchy_modseq FROM users WHERE id = ?", (user_id,))
        if row is None:
            raise NotFound(f"user {user_id} does not exist")
        value: int = row[0]
        return value

    def empty_folder(self, folder_id: int) -> int:
        self._folder_info(folder_id)
        count: int = self._conn.execute(
            "DELETE FROM messages WHERE folder_id = ?", (folder_id,)
        ).rowcount
        count += self._conn.execute("DELETE FROM items WHERE folder_id = ?", (folder_id,)).rowcount
        if count:
            self._bump(folder_id)
        return count
