"""Signed checkpoints of the tamper-evident log: a tree head (size, root hash, time) signed with
an Ed25519 key kept beside the database (created on first start, mode 0600), every
`checkpoint_interval` seconds when the tree grew, and on demand (docs/TRANSPARENCY.md)."""
import asyncio
import logging
import socket
import time
from pathlib import Path

from ..checkpoint import load_or_create_key, sign_checkpoint

log = logging.getLogger("auditd.checkpoints")


def key_path(db: str) -> Path:
    """Where the signing key lives: beside an SQLite file, else in the working directory."""
    if "://" in db:
        return Path("auditd-checkpoint.ed25519").resolve()
    return Path(db).with_name(Path(db).name + ".ed25519")


def default_origin() -> str:
    return f"{socket.gethostname() or 'localhost'}/auditd"


class Checkpointer:
    def __init__(self, store, db: str, interval: float, origin: str | None = None):
        self.store, self.interval = store, interval
        self.origin = origin or default_origin()
        self.key = load_or_create_key(key_path(db))
        self._lock = asyncio.Lock()

    async def sign(self) -> dict:
        """Sign the tree as committed now (unless the latest checkpoint has that size)."""
        async with self._lock:
            size, root = await self.store.tree_head()
            latest = await self.store.checkpoint()
            if latest is not None and latest["tree_size"] == size:
                return latest
            checkpoint = sign_checkpoint(self.key, size, root, int(time.time()), self.origin)
            await self.store.save_checkpoint(checkpoint)
            return checkpoint

    async def latest(self, covering: int = 0) -> dict:
        """The latest checkpoint, signed now if there is none or it is smaller than `covering`."""
        checkpoint = await self.store.checkpoint()
        if checkpoint is None or checkpoint["tree_size"] < covering:
            checkpoint = await self.sign()
        return checkpoint

    async def run(self):
        while True:
            try:
                await self.sign()
            except Exception as err:   # noqa: BLE001 - the next interval tries again
                log.error("signing a checkpoint failed: %s", getattr(err, "message", err))
            await asyncio.sleep(self.interval)
