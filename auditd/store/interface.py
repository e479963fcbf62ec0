"""The store interface: every question auditd asks of storage. Its docstrings are the contract a
backend is written from; `tests/store_contract.py` is the suite every backend passes.

Words used below:

- An **action** (dict) has the keys of a record (`auditd.model.actions.new_action`: uuid,
  namespace, state, action, method, path, object, user, user_agent, ip, location, body, start_ts,
  end_ts, is_user_action, cancelable, retriable) plus what the store adds: `id` (an integer that
  orders actions by recording within this store), `object_id` (the store's id of the target object,
  None without one), `log_count` (lines appended so far, which is also the highest line number) and
  `doc` (the Action's wire JSON, `auditd.model.document.render_action`, as text).
- **namespaces**: the namespaces a caller may see, a frozenset, or None for all. An action outside
  them does not exist for that call: it raises NotFound exactly as an unknown uuid does.
- A **log line** going in is `(ts, stream_type, line)`; coming out it is
  `(seq, ts, stream_type, line)` with seq 1, 2, 3... per action.
- **Writes** are durable when they return: a write that returned survives a crash of the process.
  A write that raises changed nothing. Concurrent writes may be committed together.
- After each commit the store calls `on_commit(notes)` on the event loop with the notes
  (`auditd.model.notes`) of what that commit did, in order, before the writers are answered.
- Errors are `auditd.model.errors`: NotFound, InvalidRequest (a rule refused it), Conflict (a
  uuid or name exists), Unavailable (the database failed; nothing was written; retry),
  SchemaVersionError (at open: a database this auditd cannot use).
"""
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable

from ..model.access import Principal
from ..model.errors import Unavailable
from ..model.query import ListQuery, Page

TREE_MISSING = "this storage backend keeps no tamper-evident log yet: use an SQLite database"
FORWARD_MISSING = ("this storage backend keeps no event log to forward from yet: forwarding "
                   "([[forward]] sinks) needs an SQLite database")


def built(record: dict | Callable[[], dict]) -> dict:
    """The record `Store.record_action` was given: called first when it is a function."""
    return record() if callable(record) else record


class Store(ABC):
    on_commit: Callable[[list], None] | None = None   # set by the owner; see the module docstring
    schema_version: int | None = None                 # known once open

    # ---------------------------------------------------------------- lifecycle

    @abstractmethod
    async def open(self) -> "Store":
        """Create or migrate the schema, then open the connections. Raises SchemaVersionError
        for a database from a newer auditd or one that is not auditd's. Returns self."""

    @abstractmethod
    async def close(self):
        """Commit what is pending, answer every waiting writer, then close. Writes after close
        raise Unavailable."""

    async def __aenter__(self):
        return await self.open()

    async def __aexit__(self, *exc):
        await self.close()

    @property
    @abstractmethod
    def commits(self) -> int:
        """Write transactions committed since open (one group commit counts once)."""

    # ---------------------------------------------------------------- users and organizations

    @abstractmethod
    async def authenticate(self, name: str, key: str) -> Principal | None:
        """The user whose name and API key these are, or None. The key is compared with the
        stored hash in constant time. A change of keys, roles or memberships by this store shows
        at once; one by another process on the same database within a few milliseconds (SQLite)
        or at most a second (a database server: PostgreSQL's notification, or a cache's age)."""

    @abstractmethod
    async def add_user(self, name: str, role: str = "user", key: str | None = None) -> str:
        """Create a user with a new random key (or `key`); returns the key, which is kept only as
        a hash. InvalidRequest for an unknown role or a name `model.access.check_name` refuses
        (one that could not log in or be a namespace); Conflict when the name is taken by a user or
        an organization."""

    @abstractmethod
    async def rotate_key(self, name: str) -> str:
        """Give a user a new key, returned; the old one stops working. NotFound for no user."""

    @abstractmethod
    async def remove_user(self, name: str):
        """Delete a user and its memberships. NotFound for no user."""

    @abstractmethod
    async def list_users(self) -> list[dict]:
        """[{"name", "role", "created_at", "orgs": [names]}] sorted by name."""

    @abstractmethod
    async def count_users(self) -> int:
        """How many users exist."""

    @abstractmethod
    async def add_org(self, name: str):
        """Create an organization (a namespace with members). InvalidRequest for a name
        `model.access.check_name` refuses; Conflict when the name is taken."""

    @abstractmethod
    async def add_member(self, org: str, user: str):
        """Let `user` see `org`'s actions (idempotent). NotFound for no such org or user."""

    @abstractmethod
    async def remove_member(self, org: str, user: str):
        """Stop `user` seeing `org`'s actions. NotFound when it is not a member."""

    @abstractmethod
    async def list_orgs(self) -> list[dict]:
        """[{"name", "members": [names]}] sorted by name."""

    @abstractmethod
    async def export_accounts(self) -> dict:
        """Every user and organization as stored, for a move to another database (`auditd
        migrate`): {"users": [{"name", "role", "key_hash", "created_at", "orgs": [names]}],
        "orgs": [{"name", "created_at"}]}, each list sorted by name. Keys stay hashes."""

    @abstractmethod
    async def import_accounts(self, accounts: dict) -> dict:
        """Store what `export_accounts` gave (by this backend or another) in one write: users
        with their roles, key hashes and creation times, organizations, memberships. A name that
        exists is left as it is and a membership that exists is kept, so importing again adds
        nothing. Returns how many were added: {"users", "orgs", "memberships"}. Credential
        caches see the change as after add_user."""

    # ---------------------------------------------------------------- actions: writes

    @abstractmethod
    async def record_action(self, record: dict | Callable[[], dict]) -> dict:
        """Store a new action from a complete record (`new_action`; its `parents`, nearest first,
        add child -> parent edges to the object graph). Returns the stored action; notes
        ActionChanged("create"). Conflict when the uuid exists.

        `record` may instead be a pure function (picklable, no arguments) that returns one: the
        store calls it where it writes (SQLite's writer process), so that building the record
        (a request body's parse and check) leaves the event loop. What it raises is raised here,
        and nothing is written."""

    @abstractmethod
    async def change_state(self, uuid: str, state: str, namespaces) -> dict:
        """Move an action to `state` under `auditd.model.actions.check_move` (end_ts set on a
        final state). Returns the action; notes ActionChanged("update")."""

    @abstractmethod
    async def cancel(self, uuid: str, namespaces) -> dict:
        """Cancel under `auditd.model.actions.cancel_state`. Returns the action as changed."""

    @abstractmethod
    async def retry(self, uuid: str, namespaces, caller: dict) -> dict:
        """Record the retry of a final action (`auditd.model.actions.retry_record`; `caller` has
        user, ip, user_agent, location). Returns the new action; the original is unchanged."""

    @abstractmethod
    async def append_logs(self, uuid: str, lines: list, namespaces) -> int:
        """Append [(ts, stream_type, line)] to an action's log, all or nothing, numbered on from
        its log_count (also on a final action: late lines are kept). Returns how many; notes
        LinesAppended."""

    # ---------------------------------------------------------------- actions: reads

    @abstractmethod
    async def get_action(self, uuid: str, namespaces) -> dict:
        """The action (with `doc`) by uuid, any case. NotFound otherwise."""

    @abstractmethod
    async def get_action_doc(self, uuid: str, namespaces) -> str:
        """Only the action's `doc`: what GET of one action sends."""

    @abstractmethod
    async def list_actions(self, query: ListQuery) -> Page:
        """One page of the query, newest or oldest first by (start_ts, id), and the exact total,
        both from one snapshot. Filters (CONTRACT.md section 4): uuid, uuid__startswith, state,
        start/end date bounds (inclusive, Unix seconds), action, user, is_user_action, object
        (compared namespace-free) with include_related (the object, its ancestors and its
        descendants, never siblings). An unknown object gives an empty page."""

    @abstractmethod
    async def read_logs(self, action_id: int, after_seq: int, limit: int) -> list[tuple]:
        """At most `limit` lines [(seq, ts, stream_type, line)] with seq > after_seq, in order."""

    @abstractmethod
    async def counts_by_state(self) -> dict[str, int]:
        """{state: number of actions} for all six states."""

    @abstractmethod
    async def database_size(self) -> int:
        """Bytes the database takes on disk (for metrics)."""

    @abstractmethod
    async def ping(self):
        """Return once the database answers a query; raise when it does not."""

    @abstractmethod
    async def health(self) -> str | None:
        """None while the database answers reads (credentials, counts, the newest actions) and
        takes writes; else what is wrong and what to do. After a failed write it tries a write
        that changes nothing, so it says ok again as soon as writes work again."""

    # ---------------------------------------------------------------- tamper evidence
    # The events of every action are the leaves of an RFC 9162 Merkle tree (auditd.leaves,
    # docs/TRANSPARENCY.md). A backend that keeps no tree leaves these as they are.

    async def tree_head(self) -> tuple[int, bytes]:
        """(tree size, root hash) as committed."""
        raise Unavailable(TREE_MISSING)

    async def proof(self, uuid: str, namespaces, tree_size: int) -> dict:
        """{"uuid", "tree_size", "root_hash" (hex), "leaves": [{"leaf_index", "leaf" (bytes),
        "inclusion_path" (hex, RFC 9162 order)}]} for every leaf of the action within the first
        `tree_size` leaves. NotFound as for get_action; InvalidRequest when tree_size is beyond
        the tree."""
        raise Unavailable(TREE_MISSING)

    async def consistency(self, first: int, second: int) -> list[str]:
        """The RFC 9162 consistency path (hex) from size `first` to size `second`;
        InvalidRequest unless 0 < first <= second <= the tree's size."""
        raise Unavailable(TREE_MISSING)

    async def save_checkpoint(self, checkpoint: dict):
        """Keep a signed checkpoint (its tree_size, root_hash, timestamp and the whole dict)."""
        raise Unavailable(TREE_MISSING)

    async def checkpoint(self, tree_size: int | None = None) -> dict | None:
        """The latest checkpoint kept, or the one of that size; None when there is none."""
        raise Unavailable(TREE_MISSING)

    # ---------------------------------------------------------------- forwarding
    # Sinks (auditd.tasks.forward) read the tree's events in order and keep, per sink, the
    # position of the last event they handled. A **position** is a leaf index + 1: the events
    # after position p are the leaves p, p + 1, ... (so the tree's size is the head's position).
    # A backend that keeps no tree leaves these as they are.

    async def read_events(self, after: int, limit: int) -> list[tuple[int, int, bytes | None]]:
        """At most `limit` events after position `after`, in tree order, from one snapshot:
        [(position, action key, leaf bytes)]. The action key is the store's id of the action
        the event is about (the same for all its events, kept after a purge); the leaf is None
        once a purge dropped its bytes. Only committed events, and never a gap: an event shows
        once every event before it does. Reads on reader connections, never the writer."""
        raise Unavailable(FORWARD_MISSING)

    async def action_events(self, action_key: int, before: int) -> list[bytes | None]:
        """The leaves of one action (its key as read_events gives it) before position `before`,
        in tree order (None for bytes a purge dropped)."""
        raise Unavailable(FORWARD_MISSING)

    async def forward_positions(self) -> dict[str, dict]:
        """Every sink that has a stored position: {name: {"position", "started_at", "delivered",
        "last_success", "last_error", "last_error_at", "errors"}} (times in Unix seconds or
        None)."""
        raise Unavailable(FORWARD_MISSING)

    async def start_forward(self, sink: str, position: int) -> dict:
        """The sink's stored row (as forward_positions gives it); a sink without one is stored
        first at `position` (0: from the first event; the tree's size: from now on)."""
        raise Unavailable(FORWARD_MISSING)

    async def advance_forward(self, sink: str, position: int, delivered: int, when: float):
        """The sink has taken everything up to `position` (`delivered` of those events were
        sent to it; filtered ones were not): store the position, and `when` as the last success
        when something was delivered, durably, before returning. (A stand-in reset, which empties the tree, sets every position to 0.)"""
        raise Unavailable(FORWARD_MISSING)

    async def forward_failed(self, sink: str, error: str, when: float):
        """A delivery attempt failed: keep `error` as the sink's last error and count it. The
        position stays."""
        raise Unavailable(FORWARD_MISSING)

    # ---------------------------------------------------------------- the data lifecycle

    @abstractmethod
    async def count_actions(self, filters: dict) -> int:
        """How many actions `export_actions(filters)` would give."""

    @abstractmethod
    def export_actions(self, filters: dict, with_logs: bool = True,
                       log_chunk: int = 1000) -> AsyncIterator[tuple]:
        """Every matching action, oldest first, in bounded memory, as
        ("action", action, edges, logs): the action, its object's graph edges above it as
        [child URI, parent URI], and its first log lines (all unless it has more than
        `log_chunk`); then ("logs", action, logs) for each further chunk. Filters: `states` and
        `namespaces` (lists), `since` and `until` (Unix seconds, start_ts >= since, < until).
        Lines appended after an action is read belong to a later export."""

    @abstractmethod
    async def import_batch(self, items: list) -> list[tuple]:
        """Import parsed items in one write, each on its own: ("action", lineno, record, edges,
        logs) or ("logs", lineno, uuid, logs) (see `auditd.formats.ndjson`). An existing uuid is
        skipped, log lines are keyed by (action, seq), so importing again adds nothing. Returns
        [(lineno, "imported" | "skipped" | "logs" | "error", lines added, error text or None)].
        Emits no notes."""

    @abstractmethod
    async def count_purgeable(self, cut: int) -> tuple[int, int]:
        """(actions, log lines) that `purge(cut)` would remove."""

    @abstractmethod
    async def purge(self, cut: int, on_progress=None) -> tuple[int, int]:
        """Remove final actions (Success, Failed, Canceled) that ended before `cut`, with their
        log lines, in bounded batches so other writes go on between them; calls
        `on_progress(actions, lines)` after each. Returns (actions, log lines) removed."""

    @abstractmethod
    async def reset(self) -> dict:
        """Delete every action, log line and object; users and organizations stay. Returns
        {"actions", "log_lines", "objects"} counts removed; notes ActionsRemoved()."""

    @abstractmethod
    async def load(self, items: list) -> list[dict]:
        """Store prepared fixture items [(record, lines)] in one write, all or nothing, each
        record's uuid kept. Returns the stored actions with their log_count; notes as
        record_action and append_logs do."""

    @abstractmethod
    async def has_actions(self) -> bool:
        """Whether any action is stored."""

    PLANNER_STATISTICS = False      # whether `analyze` has anything to do

    async def analyze(self):
        """Refresh the planner's statistics after a bulk load (`auditd migrate`, `import`), where
        `PLANNER_STATISTICS` says the backend plans from them. PostgreSQL does, and a database
        just filled has none, nor a visibility map (an index-only scan then reads every row's
        page too), until autovacuum gets to it: never, where it is off. SQLite's statements are
        written for the access paths they take without statistics: the default does nothing."""
