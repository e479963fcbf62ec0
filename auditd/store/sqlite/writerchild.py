"""The writer process's side of the pipe (`process.py` is the server's): its loop, and how
batches and answers travel.

A batch is a pickled list of jobs, each pickled on its own (one the child cannot rebuild fails
alone); an answer is `(results, notes, failure, began)`. Long lists (a seed's items and
documents, an append's lines) travel in slices of SLICE items, so that no one pickle or
unpickle holds a GIL for long. Frames are multiprocessing's: a 4-byte big-endian length (or -1
and an 8-byte one), then the bytes.
"""
import asyncio
import os
import pickle
import signal
import struct

from ...model.errors import Unavailable
from ...model.notes import ActionChanged
from . import tree
from .database import connect_writer
from .writer import MAX_BATCH, WAL_LIMIT, BatchCore

SLICE = 500          # items of a long list pickled together
NICENESS = 5         # added to the writer's: the event loop comes first when both want a core
_PICKLE = pickle.HIGHEST_PROTOCOL


def packed_batch(jobs) -> bytes:
    data = pickle.dumps([_packed(job) for job in jobs], _PICKLE)
    if len(data) > 0x7fffffff:
        return struct.pack("!iQ", -1, len(data)) + data
    return struct.pack("!i", len(data)) + data


class _Slices:
    """A long list, pickled SLICE items at a time: no one pickle or unpickle of it holds the
    GIL for long (one of a seed's 30,000 items held it ~50 ms)."""

    def __init__(self, items: list):
        self.parts = [pickle.dumps(items[at:at + SLICE], _PICKLE)
                      for at in range(0, len(items), SLICE)]

    def join(self) -> list:
        return [item for part in self.parts for item in pickle.loads(part)]


def _sliced(value):
    return _Slices(value) if type(value) is list and len(value) > SLICE else value


def has_slices(answer) -> bool:
    results, notes, *_ = answer
    return type(notes) is _Slices or any(type(value) is _Slices for _, value in results)


async def joined(value, actions: dict | None = None):
    """A sliced list put back together, a slice per turn of the loop. `actions` (uuid -> the
    action a job returned): notes about those actions are given that very dict, as in the
    writer's process. Sliced apart, each action came twice, and the notes' copies outlived
    the seed's pause of the garbage collector (a full collection over them: ~0.25 s)."""
    if type(value) is not _Slices:
        return value
    items = []
    for part in value.parts:
        loaded = pickle.loads(part)
        if actions:
            loaded = [_shared(note, actions) for note in loaded]
        items.extend(loaded)
        await asyncio.sleep(0)
    return items


def returned_actions(results) -> dict:
    """uuid -> action, of the actions the jobs returned in lists (a seed's)."""
    return {action["uuid"]: action for ok, value in results if ok and type(value) is list
            for action in value if type(action) is dict and "uuid" in action}


def _shared(note, actions: dict):
    if type(note) is ActionChanged:
        action = actions.get(note.action.get("uuid"))
        if action is not None and action is not note.action:
            return ActionChanged(note.kind, action, note.lineage)
    return note


def _packed(job):
    """A job as bytes of its own, so that one the child cannot rebuild fails alone; its long
    list arguments (a seed's items, an append's lines) in slices."""
    fn, args, heavy = job
    if heavy:
        args = tuple(_sliced(arg) for arg in args)
    try:
        return pickle.dumps((fn, args, heavy), _PICKLE)
    except (pickle.PicklingError, TypeError, AttributeError) as err:
        return pickle.dumps((_refuse, (repr(err),), False), _PICKLE)


def _refuse(conn, problem):
    raise RuntimeError(f"a write job could not be sent to the writer process: {problem}")


# ---------------------------------------------------------------------------- the child

class _Core(BatchCore):
    def __init__(self, conn):
        self.conn, self.temp_store = conn, "DEFAULT"


def serve(pipe, path: str, synchronous: str, transparency: bool, merge: bool):
    # A service stop reaches the whole process group; the server stops this process itself,
    # once the writes in flight are answered.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    refused = _behind_the_loop()
    try:
        conn = connect_writer(path, synchronous)
        conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT}")
        conn.frontier = tree.load(conn) if transparency else None
    except Exception as err:  # noqa: BLE001 - the server reports it
        pipe.send(("error", Unavailable(f"the writer process could not open {path}: {err}")))
        return
    pipe.send(("ready", refused))
    core = _Core(conn)
    try:
        while True:
            groups, last = _receive(pipe, merge)
            if groups:
                results, notes, failure = core.run_batch([job for jobs in groups
                                                          for job in jobs])
                try:
                    at = 0
                    for n, jobs in enumerate(groups):   # an answer for each batch sent
                        part = results[at:at + len(jobs)] if failure is None else []
                        at += len(jobs)
                        pipe.send_bytes(_answer((part, notes if n == 0 else [], failure, n == 0)))
                except OSError:        # the server is gone (killed): what committed stays
                    return
            if last:
                core.fold_journal()
                return
    finally:
        conn.close()


def _behind_the_loop():
    """Let the event loop win a contended core. On a busy host (two cores, the server, its
    writer and the clients) the loop was descheduled mid-request 10% of the time, and a read
    then waited 4-7 ms behind a time slice: that was the readers' tail under the mixed load
    (BENCHMARKS.md). The writer loses little by waiting: whatever arrives meanwhile joins its
    next commit, which costs less per record the bigger it is. Lowering one's own priority needs
    no privilege; a host where it fails (a seccomp filter) keeps the usual one, and the server
    logs why (the returned reason)."""
    try:
        os.nice(NICENESS)
    except OSError as err:
        return f"{err.strerror or err} (errno {err.errno})"
    return None


def _receive(pipe, merge: bool) -> tuple[list, bool]:
    """The next batch sent, and (merge) those that queued behind it while the last transaction
    committed: they commit together. Also whether the server closed the pipe."""
    groups, count = [], 0
    try:
        while not groups or (merge and count < MAX_BATCH and pipe.poll(0)):
            groups.append([_unpacked(job) for job in pickle.loads(pipe.recv_bytes())])
            count += len(groups[-1])
    except (EOFError, OSError):
        return groups, True
    return groups, False


def _unpacked(job: bytes):
    try:
        fn, args, heavy = pickle.loads(job)
        return fn, tuple(arg.join() if type(arg) is _Slices else arg for arg in args), heavy
    except Exception as err:  # noqa: BLE001 - that job fails, the others run
        return _refuse, (repr(err),), False


def _answer(answer) -> bytes:
    results, notes, failure, began = answer
    answer = [(ok, _sliced(value)) for ok, value in results], _sliced(notes), failure, began
    try:
        return pickle.dumps(answer, _PICKLE)
    except (pickle.PicklingError, TypeError, AttributeError):
        return pickle.dumps(([_travelling(r) for r in answer[0]], *answer[1:]), _PICKLE)


def _travelling(result):
    _, value = result
    try:
        pickle.dumps(value, _PICKLE)
        return result
    except (pickle.PicklingError, TypeError, AttributeError):
        return False, RuntimeError(repr(value))
