"""Storage: one interface (`interface.Store`, whose docstrings are the contract) and a backend
package per database engine behind it, picked by the `db` setting.

A backend package exports `create(config)`, which makes its store, and the file-level operations
that must not open the database as a store: `exists(db)`, `describe(db)`, `backup(db, target)` and
`check(db)`; and, when only one server may use a database at a time, `claim(db, holder)`, which
takes it for this process (an object with `release()`) or raises naming the holder.
"""
from ..model.errors import AuditdError
from .interface import Store

__all__ = ["Store", "backend_for", "claim_for_serving", "open_store"]


def backend_for(db: str):
    """The backend module for a `db` setting: a PostgreSQL URL, else an SQLite file path."""
    if db.startswith(("postgresql://", "postgres://")):
        try:
            from . import postgres
        except ImportError as err:   # asyncpg is an extra: pip install 'auditd[postgres]'
            raise AuditdError(f"the PostgreSQL backend needs asyncpg ({err}): "
                              "pip install 'auditd[postgres]'") from None
        return postgres
    from . import sqlite
    return sqlite


class _Unclaimed:
    def release(self):
        pass


def claim_for_serving(db: str, holder: str):
    """Take the database for this server where the backend allows only one (SQLite); raises an
    AuditdError naming the other server. Release it when the server stops."""
    backend = backend_for(db)
    return backend.claim(db, holder) if hasattr(backend, "claim") else _Unclaimed()


def open_store(config, serving: bool = False) -> Store:
    """A store for `config` (its db, synchronous and group_commit settings), not opened yet:
    `async with open_store(config) as store: ...`. `serving`: for the server, which may run
    its writer in a process of its own (`writer_process`); a command's few writes do not."""
    return backend_for(config.db).create(config, serving)
