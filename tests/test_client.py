"""auditd.client against a real `auditd serve` (the plugin's `auditd_server`, reset before each
test): every method of the blocking Client and of the AsyncClient, paging, errors, streams."""
import asyncio
import datetime
import json
import threading

import pytest

from auditd.client import ApiError, AsyncClient, Client, StreamClosed
from auditd.client.aio import settings

UTC = datetime.timezone.utc
STACK = "/api/app/v1/stack/shop/"
SERVICE = "/api/app/v1/service/web/"
CONTAINER = "/api/app/v1/container/web-1/"


@pytest.fixture
def srv(auditd_server):
    auditd_server.reset()
    return auditd_server


@pytest.fixture
def api(srv):
    with srv.client() as client:
        yield client


def uuid_with(prefix: str, n: int) -> str:
    return f"{prefix}{n:0{8 - len(prefix)}x}-0000-4000-8000-{n:012x}"


# ---------------------------------------------------------------------------- settings

def test_settings_come_from_the_docker_cloud_variables_unless_given():
    env = {"DOCKERCLOUD_REST_HOST": "http://h:1/", "DOCKERCLOUD_STREAM_HOST": "ws://s:2",
           "DOCKERCLOUD_USER": "u", "DOCKERCLOUD_APIKEY": "k"}
    assert settings(environ=env) == {"url": "http://h:1", "stream_url": "ws://s:2",
                                     "user": "u", "key": "k"}
    # an explicit URL also sets the stream URL (the variable's would point elsewhere)
    assert settings("https://x:3", "a", "b", environ=env) == {
        "url": "https://x:3", "stream_url": "wss://x:3", "user": "a", "key": "b"}
    assert settings(environ={"DOCKERCLOUD_USER": "u", "DOCKERCLOUD_APIKEY": "k"})["url"] == \
        "http://127.0.0.1:8080"


@pytest.mark.parametrize("kw, words", [
    ({"user": "a"}, "no credentials"),
    ({"key": "b"}, "DOCKERCLOUD_USER and DOCKERCLOUD_APIKEY"),
    ({"url": "localhost:8080", "user": "a", "key": "b"}, "http://HOST:PORT, not 'localhost:8080'"),
    ({"url": "ftp://h", "user": "a", "key": "b"}, "not 'ftp://h'"),
])
def test_missing_credentials_or_a_bad_url_is_a_value_error_naming_it(kw, words, monkeypatch):
    for name in ("DOCKERCLOUD_REST_HOST", "DOCKERCLOUD_USER", "DOCKERCLOUD_APIKEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match=words):
        AsyncClient(**kw)
    with pytest.raises(ValueError, match=words):
        Client(**kw)


def test_client_reads_the_environment(srv, monkeypatch):
    for name, value in srv.env.items():
        monkeypatch.setenv(name, value)
    with Client() as api:
        assert api.record(action="Node Create")["user"] == "admin"


def test_the_stream_host_variable_is_used_for_websockets(srv, monkeypatch):
    for name, value in srv.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DOCKERCLOUD_STREAM_HOST", "ws://127.0.0.1:1")
    with Client() as api:
        uuid = api.record(action="Node Create")["uuid"]       # REST: the REST host
        with pytest.raises(ApiError) as err:
            next(api.follow_logs(uuid))
    assert err.value.status is None
    assert err.value.message == "cannot reach the server at ws://127.0.0.1:1: Connection refused"


# ---------------------------------------------------------------------------- record, get, list

def test_record_get_and_list_return_the_servers_actions(api):
    action = api.record(action="Service Create", object=SERVICE, parents=[STACK],
                        user="alice", ip="10.0.0.1", body={"image": "nginx"})
    assert action["action"] == "Service Create" and action["user"] == "alice"
    assert action["location"] == "Private network" and json.loads(action["body"]) == {"image": "nginx"}
    assert api.get(action["uuid"]) == action
    page = api.list()
    assert page["objects"] == [action]
    assert page["meta"] == {"limit": 25, "next": None, "offset": 0, "previous": None,
                            "total_count": 1}


def test_every_filter_reaches_the_server(api):
    day = datetime.datetime(2026, 3, 1, 12, 0, 0)
    a = api.record(action="Stack Create", object=STACK, user="alice", state="Success",
                   start_date="2026-03-01T10:00:00Z", end_date="2026-03-01T11:00:00Z")
    b = api.record(action="Service Create", object=SERVICE, parents=[STACK], user="bob",
                   start_date="2026-03-01T13:00:00Z", is_user_action=False)
    c = api.record(action="Container Start", object=CONTAINER, parents=[SERVICE, STACK],
                   user="alice", state="Pending", start_date="2026-03-02T09:00:00Z")

    def uuids(**filters):
        return [x["uuid"] for x in api.list(**filters)["objects"]]

    assert uuids() == [c["uuid"], b["uuid"], a["uuid"]]
    assert uuids(order_by="start_date") == [a["uuid"], b["uuid"], c["uuid"]]
    assert uuids(uuid=b["uuid"]) == [b["uuid"]]
    assert uuids(uuid__startswith=a["uuid"][:13]) == [a["uuid"]]
    assert uuids(state="Pending") == [c["uuid"]]
    assert uuids(user="alice") == [c["uuid"], a["uuid"]]
    assert uuids(action="Service Create") == [b["uuid"]]
    assert uuids(is_user_action=False) == [b["uuid"]]
    assert uuids(object=SERVICE) == [b["uuid"]]
    assert uuids(object=SERVICE, include_related=True) == [c["uuid"], b["uuid"], a["uuid"]]
    # dates: a naive datetime is UTC, an aware one is converted, a date is midnight UTC
    assert uuids(start_date__gte=day) == [c["uuid"], b["uuid"]]
    assert uuids(start_date__lte=day.replace(tzinfo=UTC).astimezone(
        datetime.timezone(datetime.timedelta(hours=5)))) == [a["uuid"]]
    assert uuids(start_date__gte=datetime.date(2026, 3, 2)) == [c["uuid"]]
    assert uuids(end_date__gte=1772323200, end_date__lte="Sun, 01 Mar 2026 11:00:00 +0000") \
        == [a["uuid"]]
    assert uuids(user="alice", state="Success") == [a["uuid"]]
    with pytest.raises(TypeError, match="filter state"):
        api.list(state=["Success"])


def test_paging_by_limit_and_offset_and_following_next(api):
    made = [api.record(action="Node Create", start_date=1_700_000_000 + i)["uuid"]
            for i in range(7)]
    newest_first = made[::-1]
    page = api.list(limit=3, offset=3)
    assert [a["uuid"] for a in page["objects"]] == newest_first[3:6]
    assert page["meta"]["total_count"] == 7 and page["meta"]["offset"] == 3
    pages = list(api.pages(limit=3))
    assert [len(p["objects"]) for p in pages] == [3, 3, 1]
    assert [a["uuid"] for p in pages for a in p["objects"]] == newest_first
    assert [a["uuid"] for a in api.actions(limit=2)] == newest_first
    # filters are kept from page to page (the server's next links carry them)
    assert [a["uuid"] for a in api.actions(limit=2, order_by="start_date")] == made
    # leaving early is fine, and the next listing still works
    first_two = []
    for action in api.actions(limit=1):
        first_two.append(action["uuid"])
        if len(first_two) == 2:
            break
    assert first_two == newest_first[:2]


def test_resolve_a_short_id(srv, api):
    srv.seed([{"action": "Node Create", "uuid": uuid_with("abc1", n)} for n in (1, 2)]
             + [{"action": "Node Create", "uuid": uuid_with("abc2", 3)}])
    assert api.resolve("ABC2") == uuid_with("abc2", 3)
    assert api.resolve(uuid_with("abc1", 1)) == uuid_with("abc1", 1)
    with pytest.raises(ApiError) as several:
        api.resolve("abc1")
    assert several.value.status == 409
    assert "more than one action has an id starting with 'abc1'" in several.value.message
    with pytest.raises(ApiError) as none:
        api.resolve("abc3")
    assert (none.value.status, none.value.message) == (
        404, "no action has an id starting with 'abc3'")
    with pytest.raises(ApiError, match="ids are hex digits"):
        api.resolve("xyz")
    with pytest.raises(ValueError, match="empty"):
        api.resolve(" ")


# ---------------------------------------------------------------------------- operations

def test_cancel_retry_and_state_changes(api):
    pending = api.record(action="Service Redeploy", state="Pending")
    assert api.cancel(pending["uuid"])["state"] == "Canceled"
    running = api.record(action="Service Redeploy")
    assert api.cancel(running["uuid"])["state"] == "Canceling"
    assert api.set_state(running["uuid"], "Canceled")["state"] == "Canceled"
    retried = api.retry(running["uuid"])
    assert retried["uuid"] != running["uuid"] and retried["state"] == "Pending"
    assert retried["action"] == "Service Redeploy"
    assert api.get(running["uuid"])["state"] == "Canceled"


def test_errors_carry_the_servers_status_and_message(srv, api):
    done = api.record(action="Node Create", state="Success")
    with pytest.raises(ApiError) as err:
        api.cancel(done["uuid"])
    assert (err.value.status, err.value.message) == (
        400, f"Action {done['uuid']} cannot be canceled: it is Success")
    with pytest.raises(ApiError) as err:
        api.set_state(done["uuid"], "Pending")
    assert err.value.status == 400 and "Success" in err.value.message \
        and "Pending" in err.value.message
    with pytest.raises(ApiError) as err:
        api.get("00000000-0000-4000-8000-000000000000")
    assert err.value.status == 404
    with pytest.raises(ApiError) as err:
        api.list(state="Done")
    assert err.value.status == 400 and "state" in err.value.message
    with pytest.raises(ApiError) as err:
        api.record(action="Node Create", colour="red")
    assert err.value.status == 400 and "colour" in err.value.message
    srv.add_user("carol")
    with srv.client("carol") as carol:
        with pytest.raises(ApiError) as err:
            carol.record(action="Node Create")
        assert err.value.status == 403
    with Client(srv.url, "admin", "wrong-key") as wrong:
        with pytest.raises(ApiError) as err:
            wrong.list()
        assert err.value.status == 401 and err.value.message
        with pytest.raises(ApiError) as err:             # also on a WebSocket's handshake
            next(wrong.events())
        assert err.value.status == 401 and err.value.message
    with Client("http://127.0.0.1:1", "a", "b") as nowhere:
        with pytest.raises(ApiError) as err:
            nowhere.list()
    assert (err.value.status, err.value.message) == (
        None, "cannot reach the server at http://127.0.0.1:1: Connection refused")


# ---------------------------------------------------------------------------- logs

def test_append_logs_and_read_them_back(api):
    uuid = api.record(action="Service Create")["uuid"]
    assert api.append_logs(uuid, ["one", "two"]) == 2
    assert api.append_logs(uuid, [{"log": "three", "timestamp": 1_700_000_000,
                                   "streamType": "stderr"}]) == 1
    messages = list(api.follow_logs(uuid, tail="all", follow=False))
    assert [m["log"] for m in messages] == ["one", "two", "three"]
    assert messages[2] == {"type": "log", "log": "three", "timestamp": 1_700_000_000,
                           "streamType": "stderr"}
    assert [m["log"] for m in api.follow_logs(uuid, tail=1, follow=False)] == ["three"]
    with pytest.raises(TypeError):
        api.append_logs(uuid, "one line")
    with pytest.raises(ApiError) as err:
        list(api.follow_logs(uuid, tail="lots", follow=False))
    assert err.value.status == 400 and "tail" in err.value.message
    with pytest.raises(ApiError) as err:
        next(api.follow_logs("00000000-0000-4000-8000-000000000000"))
    assert err.value.status == 404 and "No action" in err.value.message


def test_follow_logs_receives_lines_appended_while_it_follows_and_ends_with_the_action(api):
    uuid = api.record(action="Service Redeploy")["uuid"]
    api.append_logs(uuid, ["before"])
    follower = api.follow_logs(uuid)
    assert next(follower)["log"] == "before"
    for i in range(3):
        api.append_logs(uuid, [f"live {i}"])
        assert next(follower)["log"] == f"live {i}"
    api.append_logs(uuid, ["last"])
    api.set_state(uuid, "Success")
    assert [m["log"] for m in follower] == ["last"]          # then the server closes: 1000


def test_a_stream_closed_by_the_server_otherwise_raises_stream_closed(server):
    # its own server: stopping it closes the streams with 1001 (going away)
    with Client(server.url, "admin", server.admin_key) as api:
        uuid = api.record(action="Service Redeploy")["uuid"]
        api.append_logs(uuid, ["hello"])
        follower = api.follow_logs(uuid)
        assert next(follower)["log"] == "hello"
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        with pytest.raises(StreamClosed) as err:
            next(follower)
        stopper.join()
    assert err.value.code == 1001 and isinstance(err.value, ApiError)


# ---------------------------------------------------------------------------- events

def test_events_stream_creates_and_updates(api):
    events = api.events()
    assert next(events) == {"type": "auth", "user": "admin"}
    action = api.record(action="Container Start", object=CONTAINER, parents=[SERVICE, STACK])
    api.set_state(action["uuid"], "Success")
    created, updated = next(events), next(events)
    assert (created["action"], created["state"]) == ("create", "In progress")
    assert (updated["action"], updated["state"]) == ("update", "Success")
    assert created["resource_uri"] == f"/api/audit/v1/action/{action['uuid']}/"
    assert created["parents"] == [CONTAINER, SERVICE, STACK]
    events.close()


def test_events_filters(api):
    with api.events(parent=[STACK, "/api/app/v1/stack/other/"]) as events:
        assert next(events)["type"] == "auth"
        api.record(action="Node Create")                     # not under the stack: filtered
        inside = api.record(action="Service Create", object=SERVICE, parents=[STACK])
        assert next(events)["resource_uri"] == inside["resource_uri"]


# ---------------------------------------------------------------------------- asyncio

async def test_async_client_does_the_same(srv):
    async with AsyncClient(srv.url, srv.admin_user, srv.admin_key) as api:
        events = api.events(type="action")
        assert (await events.__anext__())["type"] == "auth"
        action = await api.record(action="Service Create", object=SERVICE)
        assert (await events.__anext__())["action"] == "create"
        await events.aclose()
        assert await api.get(action["uuid"]) == action
        assert await api.resolve(action["uuid"][:6]) == action["uuid"]
        assert await api.append_logs(action["uuid"], ["a"]) == 1

        async def follow():
            return [m["log"] async for m in api.follow_logs(action["uuid"], tail="all")]
        follower = asyncio.create_task(follow())
        await api.append_logs(action["uuid"], ["b"])
        await api.set_state(action["uuid"], "Failed")
        assert await asyncio.wait_for(follower, 30) == ["a", "b"]
        retried = await api.retry(action["uuid"])
        assert (await api.cancel(retried["uuid"]))["state"] == "Canceled"
        assert [a["uuid"] async for a in api.actions(limit=1)] == [retried["uuid"],
                                                                   action["uuid"]]
        assert (await api.list(limit=1, offset=1))["objects"][0]["uuid"] == action["uuid"]


async def test_blocking_client_works_inside_a_running_event_loop(api):
    assert api.record(action="Node Create")["state"] == "In progress"


def test_a_closed_client_says_so(srv):
    api = srv.client()
    api.close()
    with pytest.raises(RuntimeError, match="closed"):
        api.list()
    api.close()                                              # twice is fine
