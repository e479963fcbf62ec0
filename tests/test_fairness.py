"""Reads before writes (auditd/http/fairness.py): while reads are about, writes beyond their slots
wait before doing any work; with no read about they do not; neither class starves the other."""
import asyncio

from auditd.http.appkeys import SHARE
from auditd.http.fairness import WriteShare


async def _started(share, loop, entered: list, name):
    await share.write_started(loop)
    entered.append(name)


async def test_writes_are_not_held_when_no_read_is_about():
    loop = asyncio.get_running_loop()
    share, entered = WriteShare(per_turn=4, window=0), []
    await asyncio.gather(*(_started(share, loop, entered, n) for n in range(40)))
    assert len(entered) == 40 and share.held == 0


async def _turns_until(condition, limit=50) -> int:
    """Loop turns until `condition()` holds."""
    for turns in range(limit):
        if condition():
            return turns
        await asyncio.sleep(0)
    raise AssertionError("never")


async def test_while_a_read_is_answered_writes_start_a_few_per_turn_in_order():
    loop = asyncio.get_running_loop()
    share, entered = WriteShare(per_turn=4, window=0), []
    share.read_started()
    tasks = [asyncio.create_task(_started(share, loop, entered, n)) for n in range(10)]
    await _turns_until(lambda: entered)
    assert entered == [0, 1, 2, 3]          # four in the first turn; six wait
    assert share.held == 6
    await _turns_until(lambda: len(entered) > 4)
    assert entered == list(range(8))        # four more in the next turn
    await asyncio.gather(*tasks)
    assert entered == list(range(10)) and not share.waiting


async def test_once_no_read_is_about_every_waiting_write_goes_on_at_once():
    loop = asyncio.get_running_loop()
    share, entered = WriteShare(per_turn=1, window=0), []
    share.read_started()
    tasks = [asyncio.create_task(_started(share, loop, entered, n)) for n in range(10)]
    await _turns_until(lambda: entered)
    assert entered == [0]
    share.read_done(loop.time())
    await _turns_until(lambda: len(entered) > 1)
    assert entered == list(range(10))        # all in the same turn
    await asyncio.gather(*tasks)


async def test_reads_stay_about_for_the_window_after_their_answer():
    loop = asyncio.get_running_loop()
    share, entered = WriteShare(per_turn=1, window=60), []
    share.read_started()
    share.read_done(loop.time())
    assert share.reads_about(loop.time())    # a reader's next request follows at once
    tasks = [asyncio.create_task(_started(share, loop, entered, n)) for n in range(3)]
    await _turns_until(lambda: entered)
    assert entered == [0]                     # still one a turn
    await asyncio.gather(*tasks)
    assert entered == [0, 1, 2]


async def test_a_write_whose_client_leaves_while_it_waits_takes_no_place():
    loop = asyncio.get_running_loop()
    share, entered = WriteShare(per_turn=1, window=0), []
    share.read_started()
    first = asyncio.create_task(_started(share, loop, entered, "first"))
    gone = asyncio.create_task(_started(share, loop, entered, "gone"))
    after = asyncio.create_task(_started(share, loop, entered, "after"))
    await _turns_until(lambda: entered)
    gone.cancel()
    await asyncio.gather(first, after)
    assert entered == ["first", "after"] and gone.cancelled() and not share.waiting


async def test_many_records_and_lists_at_once_all_answer_and_leave_nothing_counted(api):
    """Through the server: 80 records and 40 lists in flight together, every one answered, and
    every record listed afterwards (the share counted them all in and out)."""
    async def record(n):
        return (await api.record(action="Service Create", object=f"/api/app/v1/service/s{n}/"))

    async def listing():
        return (await api.list("limit=5"))["meta"]["total_count"]

    results = await asyncio.gather(*(record(n) for n in range(80)),
                                   *(listing() for _ in range(40)))
    recorded, totals = results[:80], results[80:]
    assert len({a["uuid"] for a in recorded}) == 80
    assert all(0 <= total <= 80 for total in totals)
    assert (await api.list("limit=100"))["meta"]["total_count"] == 80
    share = api.client.server.app[SHARE]
    assert share.reads == 0 and not share.waiting
    metrics = await (await api.client.get("/_auditd/metrics")).text()
    assert "\nauditd_writes_waiting 0\n" in metrics
    assert f"\nauditd_writes_held_total {share.held}\n" in metrics
