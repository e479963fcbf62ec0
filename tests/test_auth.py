"""Credentials, roles and namespaces (CONTRACT.md section 8)."""
import base64
import uuid as uuidlib

import pytest

from conftest import basic, error_of

LIST = "/api/audit/v1/action/"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# ---------------------------------------------------------------------------- authentication

async def assert_401(resp) -> str:
    message = await error_of(resp, 401)
    assert resp.headers["WWW-Authenticate"] == 'Basic realm="auditd"'
    return message


async def test_no_credentials(api):
    message = await assert_401(await api.get(LIST, as_=None))
    assert "Authorization" in message and "Basic" in message


async def test_wrong_key_and_unknown_user_look_the_same(api):
    wrong_key = await assert_401(await api.get(LIST, as_=None, headers=basic("alice", "x" * 43)))
    other_key = await assert_401(await api.get(LIST, as_=None,
                                               headers=basic("alice", api.keys["bob"])))
    unknown = await assert_401(await api.get(LIST, as_=None,
                                             headers=basic("mallory", api.keys["alice"])))
    assert wrong_key == other_key == unknown


@pytest.mark.parametrize("header", [
    "Basic !!!not-base64!!!",
    "Basic " + b64("alice"),                 # no colon
    "Basic " + b64(":key"),                  # no user
    "Basic " + b64("alice:"),                # no key
    "Basic",
    "Basic ",
    "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),   # not UTF-8
    "Bearer sometoken",
    "Digest username=alice",
    "",
    "alice:key",
])
async def test_malformed_authorization_is_401(api, header):
    await assert_401(await api.get(LIST, as_=None, headers={"Authorization": header}))


async def test_apikey_scheme_and_case_insensitive_scheme_work(api):
    for header in (f"ApiKey alice:{api.keys['alice']}", f"apikey alice:{api.keys['alice']}",
                   f"basic {b64('alice:' + api.keys['alice'])}"):
        resp = await api.get(LIST, as_=None, headers={"Authorization": header})
        assert resp.status == 200, (header, await resp.text())


async def test_wrong_apikey_is_401(api):
    await assert_401(await api.get(LIST, as_=None, headers={"Authorization": "ApiKey alice:nope"}))


async def test_query_token_is_not_accepted_on_rest_paths(api):
    resp = await api.get(f"{LIST}?user=alice&token={api.keys['alice']}", as_=None)
    await assert_401(resp)


async def test_every_operation_needs_credentials_and_changes_nothing_without(api):
    action = await api.record(user="alice", state="Failed")
    uri = f"/api/audit/v1/action/{action['uuid']}/"
    attempts = [("GET", LIST, None), ("GET", uri, None),
                ("POST", LIST, {"action": "Service Create"}),
                ("PATCH", uri, {"state": "Success"}), ("POST", uri + "cancel/", None),
                ("POST", uri + "retry/", None), ("POST", uri + "logs/", ["line"]),
                ("GET", "/api/audit/v1/alice/action/", None)]
    for method, path, body in attempts:
        await assert_401(await api.request(method, path, as_=None, json=body))
    page = await api.list()
    assert [a["uuid"] for a in page["objects"]] == [action["uuid"]]
    assert page["objects"][0] == action
    assert await api.read_logs(action["uuid"]) == []


async def test_removed_user_and_rotated_key_stop_working(api):
    old = api.keys["bob"]
    new = await api.store.rotate_key("bob")
    await assert_401(await api.get(LIST, as_=None, headers=basic("bob", old)))
    assert (await api.get(LIST, as_=None, headers=basic("bob", new))).status == 200
    await api.store.remove_user("bob")
    await assert_401(await api.get(LIST, as_=None, headers=basic("bob", new)))


# ---------------------------------------------------------------------------- roles

async def test_user_role_cannot_produce(api):
    action = await api.record(user="alice")
    uri = f"/api/audit/v1/action/{action['uuid']}/"
    for method, path, body in (("POST", LIST, {"action": "Service Create", "user": "alice"}),
                               ("POST", "/api/audit/v1/alice/action/", {"action": "X"}),
                               ("PATCH", uri, {"state": "Success"}),
                               ("POST", uri + "logs/", ["line"])):
        message = await error_of(await api.request(method, path, as_="alice", json=body), 403)
        assert "alice" in message and "producer" in message
    assert await api.fetch(action["uuid"]) == action
    assert (await api.list())["meta"]["total_count"] == 1
    assert await api.read_logs(action["uuid"]) == []


@pytest.mark.parametrize("who", ["producer", "admin"])
async def test_producer_and_admin_record_and_read_every_namespace(api, who):
    mine = await api.record(as_=who, user="alice")
    theirs = await api.record(as_=who, user="bob", namespace="acme")
    page = await api.list(as_=who)
    assert {a["uuid"] for a in page["objects"]} == {mine["uuid"], theirs["uuid"]}
    assert (await api.set_state(mine["uuid"], "Success", as_=who))["state"] == "Success"
    assert await api.append(theirs["uuid"], ["x"], as_=who) == {"appended": 1}


async def test_users_cancel_and_retry_in_their_namespaces(api):
    pending = await api.record(user="carol", namespace="acme", state="Pending")
    failed = await api.record(user="alice", state="Failed")
    resp = await api.post(f"/api/audit/v1/action/{pending['uuid']}/cancel/", as_="alice")
    assert resp.status == 202
    resp = await api.post(f"/api/audit/v1/action/{failed['uuid']}/retry/", as_="alice")
    assert resp.status == 202


# ---------------------------------------------------------------------------- namespaces

@pytest.fixture
async def spread(api):
    """One action in each of alice's, bob's and acme's namespaces, on related objects."""
    svc = "/api/app/v1/service/S/"
    return {
        "alice": await api.record(user="alice", object=svc, parents=["/api/app/v1/stack/ST/"]),
        "bob": await api.record(user="bob", object="/api/app/v1/container/C/", parents=[svc]),
        "acme": await api.record(user="carol", namespace="acme", object=svc),
    }


def _uuids(page):
    return {a["uuid"] for a in page["objects"]}


@pytest.mark.parametrize("who, sees", [("alice", {"alice", "acme"}), ("bob", {"bob"}),
                                       ("carol", {"acme"}),
                                       ("admin", {"alice", "bob", "acme"}),
                                       ("producer", {"alice", "bob", "acme"})])
async def test_each_caller_lists_only_its_namespaces(api, spread, who, sees):
    expected = {spread[ns]["uuid"] for ns in sees}
    page = await api.list(as_=who)
    assert _uuids(page) == expected
    assert page["meta"]["total_count"] == len(expected)
    for query in ("state=In+progress", "object=/api/app/v1/stack/ST/&include_related=true",
                  "action=Service+Create", "is_user_action=true"):
        page = await api.list(query, as_=who)
        assert _uuids(page) <= expected and page["meta"]["total_count"] == len(page["objects"])
    for ns, action in spread.items():
        found = await api.list(f"uuid__startswith={action['uuid'][:8]}", as_=who)
        assert _uuids(found) == ({action["uuid"]} if ns in sees else set())


async def test_foreign_action_is_404_exactly_like_a_missing_one(api, spread):
    foreign = spread["bob"]["uuid"]
    missing = str(uuidlib.uuid4())
    for suffix, method in (("", "GET"), ("cancel/", "POST"), ("retry/", "POST")):
        foreign_msg = await error_of(await api.request(
            method, f"/api/audit/v1/action/{foreign}/{suffix}", as_="alice"), 404)
        missing_msg = await error_of(await api.request(
            method, f"/api/audit/v1/action/{missing}/{suffix}", as_="alice"), 404)
        assert foreign_msg.replace(foreign, missing) == missing_msg
    assert await api.fetch(foreign) == spread["bob"]
    assert (await api.list())["meta"]["total_count"] == 3


async def test_namespaced_paths_restrict_to_that_namespace(api, spread):
    page = await api.list(as_="alice", path="/api/audit/v1/acme/action/")
    assert _uuids(page) == {spread["acme"]["uuid"]}
    page = await api.list(as_="alice", path="/api/audit/v1/alice/action/")
    assert _uuids(page) == {spread["alice"]["uuid"]}
    page = await api.list(as_="admin", path="/api/audit/v1/bob/action/")
    assert _uuids(page) == {spread["bob"]["uuid"]}
    acme_uuid = spread["acme"]["uuid"]
    assert (await api.fetch(acme_uuid, as_="carol"))["uuid"] == acme_uuid
    resp = await api.get(f"/api/audit/v1/acme/action/{acme_uuid}/", as_="carol")
    assert resp.status == 200 and (await resp.json())["uuid"] == acme_uuid
    # the right action under another (visible) namespace's path is not found
    await error_of(await api.get(f"/api/audit/v1/alice/action/{acme_uuid}/", as_="alice"), 404)


async def test_invisible_namespace_is_404_like_a_missing_one(api, spread):
    bob_uuid = spread["bob"]["uuid"]
    for as_ in ("alice", "carol"):
        for method, template in (("GET", "/api/audit/v1/{}/action/"),
                                 ("GET", f"/api/audit/v1/{{}}/action/{bob_uuid}/"),
                                 ("POST", f"/api/audit/v1/{{}}/action/{bob_uuid}/cancel/"),
                                 ("POST", f"/api/audit/v1/{{}}/action/{bob_uuid}/retry/")):
            existing = await error_of(
                await api.request(method, template.format("bob"), as_=as_), 404)
            missing = await error_of(
                await api.request(method, template.format("nosuchns"), as_=as_), 404)
            assert existing.replace("bob", "nosuchns") == missing
    assert await api.fetch(bob_uuid) == spread["bob"]


async def test_org_membership_changes_take_effect(api, spread):
    acme_uuid = spread["acme"]["uuid"]
    await api.store.remove_member("acme", "carol")
    assert _uuids(await api.list(as_="carol")) == set()
    await error_of(await api.get(f"/api/audit/v1/action/{acme_uuid}/", as_="carol"), 404)
    await api.store.add_member("acme", "bob")
    assert _uuids(await api.list(as_="bob")) == {spread["bob"]["uuid"], acme_uuid}


def test_api_keys_are_long_random_url_safe_and_never_look_like_an_option():
    import re
    from auditd.model.access import new_key
    keys = [new_key() for _ in range(2000)]
    assert len(set(keys)) == len(keys)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{43,}", key) for key in keys)
    # `auditd run --apikey KEY` and friends would read a leading '-' as an option
    assert not any(key.startswith("-") for key in keys)
