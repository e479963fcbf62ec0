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


RS = b"\x1e"    # joins a store's docs: JSON text never holds a raw control character


class Page:
    """One page of a list: the exact `total_count` of the whole query, each Action's JSON (UTF-8,
    in the query's order), and `last`, the (start_ts, id) of the page's last row (the next
    cursor), or None for an empty page.

    A store gives the docs as a list, or (`Page.joined`) as one bytes object SQLite joined with
    RS: the commonest lists then cost one row, not one per action, and the HTTP answer is made
    from it by one replace."""
    __slots__ = ("total", "last", "size", "_docs", "_joined", "_items")

    def __init__(self, total: int, docs: list[bytes], last: tuple[int, int] | None):
        self.total, self.last, self.size = total, last, len(docs)
        self._docs, self._joined, self._items = docs, None, None

    @classmethod
    def joined(cls, total: int, joined: bytes | None, size: int,
               last: tuple[int, int] | None) -> "Page":
        page = cls(total, [], last)
        if joined:
            page._docs, page._joined, page.size = None, joined, size
        return page

    @property
    def docs(self) -> list[bytes]:
        if self._docs is None:
            self._docs = self._joined.split(RS)
        return self._docs

    @property
    def nbytes(self) -> int:
        """About how much memory the page takes once answered (what a page cache counts): its
        docs, and the JSON of the answer made from them."""
        docs = len(self._joined) if self._docs is None else sum(len(doc) for doc in self._docs)
        return 2 * docs

    def json_items(self) -> bytes:
        """The docs as the inside of a JSON array (made once: a remembered page is answered
        again and again)."""
        items = self._items
        if items is None:
            items = self._items = (self._joined.replace(RS, b", ") if self._docs is None
                                   else b", ".join(self._docs))
        return items

    def __eq__(self, other):
        return isinstance(other, Page) and (self.total, self.docs, self.last) == \
            (other.total, other.docs, other.last)

    def __repr__(self):
        return f"Page(total={self.total}, size={self.size}, last={self.last})"


def format_cursor(position) -> str:
    """The position token a `next` link carries: `<start_ts>.<id>`."""
    return f"{position[0]}.{position[1]}"
