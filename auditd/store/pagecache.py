"""List pages remembered until the database changes.

A console, a dashboard or a script polling "the newest 25" asks the same list again and again,
and between two writes the answer cannot change. A backend that can tell cheaply whether anything
was committed since it last looked (SQLite's `PRAGMA data_version`: one read of the WAL index)
keeps each answered page under its query and that version, and answers a repeated query from
memory until the version moves; then everything remembered is dropped at once.

Bounded by bytes, not entries: a page of 1,000 actions is ~700 KB. When the next page would pass
the budget, the remembered ones are dropped (a poller's few queries are back after one miss each);
a page bigger than a sixteenth of the budget is never kept.
"""
from ..model.query import ListQuery, Page

BUDGET = 16 * 1024 * 1024       # bytes of Action JSON kept at most
OVERHEAD = 256                  # bytes counted per page besides its JSON (key, object)


def query_key(query: ListQuery):
    """What a page depends on besides the data, or None when a filter's value cannot be a key."""
    key = (query.namespaces, tuple(query.filters.items()), query.limit, query.offset,
           query.newest_first, query.cursor)
    try:
        hash(key)
    except TypeError:
        return None
    return key


class PageCache:
    """Pages by query key, all of one data version. `get` with a version other than the one the
    pages were read at drops them; `put` keeps a page only if it was read at the version the
    cache holds now (the caller passes the version it saw *before* reading), so a page read in a
    snapshot older than the newest version seen is never kept."""

    def __init__(self, budget: int = BUDGET):
        self.budget = budget
        self.version = None
        self.pages: dict = {}
        self.size = 0

    def get(self, version, key) -> Page | None:
        if version != self.version:
            self.clear()
            self.version = version
        return self.pages.get(key) if key is not None else None

    def put(self, version, key, page: Page):
        if key is None or version != self.version:
            return
        cost = page.nbytes + OVERHEAD
        if cost > self.budget // 16:
            return
        if self.size + cost > self.budget:
            self.clear()
        self.pages[key] = page
        self.size += cost

    def clear(self):
        self.pages.clear()
        self.size = 0
