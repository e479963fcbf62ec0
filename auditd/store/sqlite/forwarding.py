"""The SQLite store's forwarding reads and positions (interface: "forwarding").

Events are read from `events` (tree.py) on the reader pool: an autocommit SELECT is one snapshot,
and the writer commits leaves in position order, so a read never sees a gap. Positions live in
`forward_positions`; they are written through the writer like any other write, so one is durable
when it returns."""
import time

_ROW = ("position", "started_at", "delivered", "last_success", "last_error", "last_error_at",
        "errors")
_SELECT = "SELECT sink, " + ", ".join(_ROW) + " FROM forward_positions"


def _row(row) -> dict:
    return dict(zip(_ROW, row[1:]))


class ForwardReads:
    """Mixed into SQLiteStore, which provides `_write` and `_read`."""

    async def read_events(self, after: int, limit: int) -> list[tuple[int, int, bytes | None]]:
        rows = await self._read("SELECT idx, action_id, leaf FROM events WHERE idx > ? "
                                "ORDER BY idx LIMIT ?", (after, limit))
        return [(idx, key, None if leaf is None else bytes(leaf)) for idx, key, leaf in rows]

    async def action_events(self, action_key: int, before: int) -> list[bytes | None]:
        rows = await self._read("SELECT leaf FROM events WHERE action_id = ? AND idx < ? "
                                "ORDER BY idx", (action_key, before))
        return [None if leaf is None else bytes(leaf) for (leaf,) in rows]

    async def forward_positions(self) -> dict[str, dict]:
        return {row[0]: _row(row) for row in await self._read(_SELECT + " ORDER BY sink")}

    async def start_forward(self, sink: str, position: int) -> dict:
        return await self._write(_start, sink, position)

    async def advance_forward(self, sink: str, position: int, delivered: int, when: float):
        await self._write(_advance, sink, position, delivered, when)

    async def forward_failed(self, sink: str, error: str, when: float):
        await self._write(_failed, sink, error, when)


def _start(conn, sink, position):
    conn.execute("INSERT OR IGNORE INTO forward_positions (sink, position, started_at) "
                 "VALUES (?, ?, ?)", (sink, position, int(time.time())))
    return _row(conn.execute(_SELECT + " WHERE sink = ?", (sink,)).fetchone()), []


def _advance(conn, sink, position, delivered, when):
    conn.execute("UPDATE forward_positions SET position = ?, delivered = delivered + ?, "
                 "last_success = CASE WHEN ? > 0 THEN ? ELSE last_success END WHERE sink = ?",
                 (position, delivered, delivered, when, sink))
    return None, []


def _failed(conn, sink, error, when):
    conn.execute("UPDATE forward_positions SET last_error = ?, last_error_at = ?, "
                 "errors = errors + 1 WHERE sink = ?", (error, when, sink))
    return None, []
