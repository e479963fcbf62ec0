"""Client: the AsyncClient's methods as plain blocking calls.

The AsyncClient runs on a private event loop in a daemon thread; each call waits for its
result there. Streams and listings are ordinary iterators (`for line in api.follow_logs(u)`);
leaving the loop early closes the stream. Usable from any thread, and from code that runs an
event loop of its own.
"""
import asyncio
import threading
import weakref

from .aio import AsyncClient


def _shutdown(loop: asyncio.AbstractEventLoop, thread: threading.Thread, aclient: AsyncClient):
    if loop.is_closed():
        return
    if loop.is_running():
        asyncio.run_coroutine_threadsafe(aclient.close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
    loop.close()


class Client:
    """`with Client(url, user, key) as api: api.record(action="Service Create")`.

    Same arguments and methods as AsyncClient; `close()` (or the `with` block) ends the
    private loop; an unclosed Client is closed when it is garbage-collected or at exit."""

    def __init__(self, url=None, user=None, key=None, **options):
        self.aio = AsyncClient(url, user, key, **options)
        self.url, self.stream_url, self.user = self.aio.url, self.aio.stream_url, self.aio.user
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="auditd-client",
                                        daemon=True)
        self._thread.start()
        self._close = weakref.finalize(self, _shutdown, self._loop, self._thread, self.aio)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._close()

    def _run(self, coro):
        if not self._close.alive:
            coro.close()
            raise RuntimeError("this Client is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _iterate(self, agen) -> "SyncIterator":
        return SyncIterator(self, agen)

    # The AsyncClient's methods, one by one (see there for what each does).
    def list(self, **kw) -> dict:
        return self._run(self.aio.list(**kw))

    def pages(self, **kw) -> "SyncIterator":
        return self._iterate(self.aio.pages(**kw))

    def actions(self, **kw) -> "SyncIterator":
        return self._iterate(self.aio.actions(**kw))

    def get(self, uuid: str) -> dict:
        return self._run(self.aio.get(uuid))

    def resolve(self, identifier: str) -> str:
        return self._run(self.aio.resolve(identifier))

    def cancel(self, uuid: str) -> dict:
        return self._run(self.aio.cancel(uuid))

    def retry(self, uuid: str) -> dict:
        return self._run(self.aio.retry(uuid))

    def record(self, **fields) -> dict:
        return self._run(self.aio.record(**fields))

    def set_state(self, uuid: str, state: str) -> dict:
        return self._run(self.aio.set_state(uuid, state))

    def append_logs(self, uuid: str, lines) -> int:
        return self._run(self.aio.append_logs(uuid, lines))

    def follow_logs(self, uuid: str, tail=None, follow: bool = True) -> "SyncIterator":
        return self._iterate(self.aio.follow_logs(uuid, tail=tail, follow=follow))

    def events(self, **filters) -> "SyncIterator":
        return self._iterate(self.aio.events(**filters))


class SyncIterator:
    """An async generator of the AsyncClient, stepped from the caller's thread. Nothing is sent
    before the first `next()`. `close()` (or leaving a `with` block) ends it early."""

    def __init__(self, client: Client, agen):
        self._client, self._agen, self._done = client, agen, False

    def __iter__(self):
        return self

    def __next__(self):
        if self._done:
            raise StopIteration

        async def step():
            return await self._agen.__anext__()
        try:
            return self._client._run(step())
        except StopAsyncIteration:
            self._done = True
            raise StopIteration from None
        except BaseException:
            self._done = True
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if not self._done:
            self._done = True
            client = self._client
            if not client._close.alive:
                return
            if threading.current_thread() is client._thread:   # collected on the loop itself
                client._loop.create_task(self._agen.aclose())
            else:
                client._run(self._agen.aclose())

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - nothing to report to at garbage collection
            pass
