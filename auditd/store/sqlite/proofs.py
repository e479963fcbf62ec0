"""The SQLite store's tamper-evidence reads and checkpoints (interface: "tamper evidence").

Proofs read O(log n) stored hashes through `tree.py` on a connection of their own, in one read
transaction (one snapshot), on a worker thread."""
import asyncio
import json
import sqlite3

from ...model.access import check_visible
from ...model.errors import InvalidRequest
from . import tree
from .database import connect, in_snapshot, unavailable


class TreeReads:
    """Mixed into SQLiteStore, which provides `path`, `_write` and `_read`."""

    _proof_conn: sqlite3.Connection | None = None
    _proof_lock: asyncio.Lock | None = None

    async def _in_snapshot(self, fn, *args):
        if self._proof_lock is None:
            self._proof_lock = asyncio.Lock()
        async with self._proof_lock:
            return await asyncio.to_thread(self._snapshot, fn, *args)

    def _snapshot(self, fn, *args):
        if self._proof_conn is None:
            self._proof_conn = connect(self.path)
            self._proof_conn.execute("PRAGMA query_only = 1")
        try:
            return in_snapshot(self._proof_conn, fn, *args)
        except sqlite3.Error as err:
            raise unavailable(err, "be read") from None

    def _close_proofs(self):
        if self._proof_conn is not None:
            self._proof_conn.close()
            self._proof_conn = None

    async def tree_head(self) -> tuple[int, bytes]:
        return await self._in_snapshot(tree.head)

    async def proof(self, uuid: str, namespaces, tree_size: int) -> dict:
        def read(conn):
            row = conn.execute("SELECT id, namespace FROM actions WHERE uuid = ?",
                               (uuid.lower(),)).fetchone()
            check_visible(uuid, row[1] if row else None, namespaces)
            size, _ = tree.head(conn)
            if not 0 < tree_size <= size:
                raise InvalidRequest(f"tree_size must be from 1 to {size}, the tree's size now")
            return {"uuid": uuid.lower(), **tree.proof(conn, row[0], tree_size)}
        return await self._in_snapshot(read)

    async def consistency(self, first: int, second: int) -> list[str]:
        def read(conn):
            size, _ = tree.head(conn)
            if not 0 < first <= second <= size:
                raise InvalidRequest(f"first and second must satisfy 0 < first <= second <= "
                                     f"{size} (the tree's size now)")
            return tree.consistency(conn, first, second)
        return await self._in_snapshot(read)

    async def save_checkpoint(self, checkpoint: dict):
        await self._write(_save_checkpoint, checkpoint)

    async def checkpoint(self, tree_size: int | None = None) -> dict | None:
        if tree_size is None:
            rows = await self._read("SELECT document FROM checkpoints "
                                    "ORDER BY tree_size DESC LIMIT 1")
        else:
            rows = await self._read("SELECT document FROM checkpoints WHERE tree_size = ?",
                                    (tree_size,))
        return json.loads(rows[0][0]) if rows else None


def _save_checkpoint(conn, checkpoint: dict):
    conn.execute("INSERT OR REPLACE INTO checkpoints (tree_size, root_hash, timestamp, document) "
                 "VALUES (?, ?, ?, ?)", (checkpoint["tree_size"],
                                         bytes.fromhex(checkpoint["root_hash"]),
                                         checkpoint["timestamp"], json.dumps(checkpoint)))
    return None, []
