"""A list request as the store takes it, and the page it answers with (CONTRACT.md section 4)."""
from dataclasses import dataclass, field


@dataclass
class ListQuery:
    """A validated list request. `namespaces` None means every namespace. `filters` holds the
    contract's filters by their wire names, loaded (dates as Unix seconds, booleans as bool).
    `cursor` is the (start_ts, id) of the row before this page, from a `next` link: with it the
    page is found by seeking, whatever `offset` says."""
    namespaces: frozenset | None
    limit: int
    offset: int = 0
    newest_first: bool = True
    filters: dict = field(default_factory=dict)
    cursor: tuple[int, int] | None = None


@dataclass
class Page:
    total: int                        # exact total_count of the whole query
    docs: list[bytes]                 # each Action's JSON, UTF-8, in the query's order
    last: tuple[int, int] | None      # (start_ts, id) of the page's last row: the next cursor


def format_cursor(position) -> str:
    """The position token a `next` link carries: `<start_ts>.<id>`."""
    return f"{position[0]}.{position[1]}"
