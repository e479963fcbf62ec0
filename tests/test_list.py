"""GET /api/audit/v1/action/: every filter, newest-first order, pagination (CONTRACT.md section 4)."""
import asyncio
import json
from datetime import datetime, timezone
from urllib.parse import parse_qsl, urlsplit

import pytest

from conftest import error_of

# Wed, 17 Sep 2014 08:26:22 +0000, the seed page's example date.
T = 1410942382
DAY = 86400
assert datetime.fromtimestamp(T, timezone.utc) == datetime(2014, 9, 17, 8, 26, 22,
                                                          tzinfo=timezone.utc)


def uuids(page) -> list:
    return [a["uuid"] for a in page["objects"]]


# ---------------------------------------------------------------------------- simple filters

async def test_uuid_is_exact(api):
    recorded = [await api.record() for _ in range(3)]
    target = recorded[1]["uuid"]
    assert uuids(await api.list(f"uuid={target}")) == [target]
    assert uuids(await api.list(f"uuid={target[:8]}")) == []


async def test_uuid_startswith_matches_prefixes(api):
    recorded = [(await api.record())["uuid"] for _ in range(12)]
    newest_first = recorded[::-1]
    target = recorded[4]
    # the CLI resolves an 8-character short id this way
    assert uuids(await api.list(f"uuid__startswith={target[:8]}")) == [target]
    assert uuids(await api.list(f"uuid__startswith={target}")) == [target]
    for prefix in {u[0] for u in recorded}:
        page = await api.list(f"uuid__startswith={prefix}")
        assert uuids(page) == [u for u in newest_first if u.startswith(prefix)]
        assert page["meta"]["total_count"] == len(page["objects"])
    # a prefix matching nothing: 'g' is not hex, so use a full uuid with the last digit changed
    absent = target[:-1] + ("0" if target[-1] != "0" else "1")
    assert uuids(await api.list(f"uuid__startswith={absent}")) == []


async def test_state_filter_for_each_state(api):
    by_state = {}
    for state in ("Pending", "In progress", "Success", "Failed"):
        by_state[state] = [(await api.record(state=state))["uuid"]]
    canceling = await api.record(state="In progress")
    await api.set_state(canceling["uuid"], "Canceling")
    by_state["Canceling"] = [canceling["uuid"]]
    canceled = await api.record(state="Pending")
    await api.set_state(canceled["uuid"], "Canceled")
    by_state["Canceled"] = [canceled["uuid"]]
    by_state["Success"].append((await api.record(state="Success"))["uuid"])

    for state, expected in by_state.items():
        page = await api.list(f"state={state}")
        assert sorted(uuids(page)) == sorted(expected), state
        assert all(a["state"] == state for a in page["objects"])
        assert page["meta"]["total_count"] == len(expected)


async def test_action_user_and_is_user_action_filters(api):
    a = await api.record(action="Service Create", user="alice", is_user_action=True)
    b = await api.record(action="Service Redeploy", user="alice", is_user_action=False)
    c = await api.record(action="Service Create", user="bob", is_user_action=False)

    assert uuids(await api.list("action=Service+Create")) == [c["uuid"], a["uuid"]]
    assert uuids(await api.list("action=Service%20Redeploy")) == [b["uuid"]]
    assert uuids(await api.list("action=service+create")) == []          # exact
    assert uuids(await api.list("user=alice")) == [b["uuid"], a["uuid"]]
    assert uuids(await api.list("user=bob")) == [c["uuid"]]
    assert uuids(await api.list("is_user_action=true")) == [a["uuid"]]
    assert uuids(await api.list("is_user_action=false")) == [c["uuid"], b["uuid"]]
    assert uuids(await api.list("user=alice&is_user_action=false&action=Service+Redeploy")) \
        == [b["uuid"]]


async def test_order_by(api):
    recorded = [(await api.record(start_date=T + i))["uuid"] for i in range(4)]
    assert uuids(await api.list()) == recorded[::-1]
    assert uuids(await api.list("order_by=-start_date")) == recorded[::-1]
    assert uuids(await api.list("order_by=start_date")) == recorded


async def test_newest_first_ties_broken_by_recording_order(api):
    late = await api.record(start_date=T + 60)
    tied = [(await api.record(start_date=T))["uuid"] for _ in range(3)]
    early = await api.record(start_date=T - 60)
    expected = [late["uuid"], *tied[::-1], early["uuid"]]
    assert uuids(await api.list()) == expected
    assert uuids(await api.list("order_by=start_date")) == expected[::-1]
    # ties stay in the same order across page boundaries
    paged = []
    for offset in range(0, 5, 2):
        paged += uuids(await api.list(f"limit=2&offset={offset}"))
    assert paged == expected


# ---------------------------------------------------------------------------- dates

T_FORMS = [
    pytest.param("Wed,%2017%20Sep%202014%2008:26:22%20%2B0000", id="rfc2822"),
    pytest.param("Wed,%2017%20Sep%202014%2008:26:22%20+0000", id="rfc2822-plus-decoded-as-space"),
    pytest.param("Wed%2C+17+Sep+2014+08%3A26%3A22+%2B0000", id="rfc2822-form-encoded"),
    pytest.param("Wed,%2017%20Sep%202014%2010:26:22%20+0200", id="rfc2822-other-zone-plus-space"),
    pytest.param("Wed,%2017%20Sep%202014%2006:26:22%20-0200", id="rfc2822-negative-zone"),
    pytest.param("2014-09-17T08:26:22Z", id="iso-datetime-z"),
    pytest.param("2014-09-17T08:26:22", id="iso-datetime-no-zone-is-utc"),
    pytest.param("2014-09-17T10:26:22%2B02:00", id="iso-datetime-offset"),
    pytest.param(str(T), id="unix-seconds"),
]


@pytest.fixture
async def dated(api):
    """Actions started a day before T, at T, a second after T and a day after T."""
    starts = {"day_before": T - DAY, "at": T, "second_after": T + 1, "day_after": T + DAY}
    return {name: (await api.record(start_date=ts))["uuid"] for name, ts in starts.items()}


async def test_start_date_bounds_in_each_format(api, dated):
    problems = []
    for form in T_FORMS:
        value = form.values[0]
        gte = uuids(await api.list(f"start_date__gte={value}"))
        lte = uuids(await api.list(f"start_date__lte={value}"))
        both = uuids(await api.list(f"start_date__gte={value}&start_date__lte={value}"))
        if (gte, lte, both) != ([dated["day_after"], dated["second_after"], dated["at"]],
                                [dated["at"], dated["day_before"]], [dated["at"]]):
            problems.append(form.id)
    assert not problems, f"date forms that did not bound start_date at T: {problems}"


async def test_bare_iso_date_means_midnight_utc(api, dated):
    assert uuids(await api.list("start_date__gte=2014-09-17")) == \
        [dated["day_after"], dated["second_after"], dated["at"]]
    assert uuids(await api.list("start_date__lte=2014-09-17")) == [dated["day_before"]]
    assert uuids(await api.list("start_date__gte=2014-09-17&start_date__lte=2014-09-18")) == \
        [dated["second_after"], dated["at"]]


async def test_start_date_precision_is_one_second(api, dated):
    assert uuids(await api.list(f"start_date__gte={T + 1}&start_date__lte={T + 1}")) == \
        [dated["second_after"]]
    assert uuids(await api.list("start_date__gte=2014-09-17T08:26:22.900Z"
                                "&start_date__lte=2014-09-17T08:26:22.900Z")) == [dated["at"]]


async def test_end_date_bounds_in_each_format(api):
    ended_before = await api.record(state="Success", start_date=T - DAY, end_date=T - 10)
    ended_at = await api.record(state="Failed", start_date=T - DAY, end_date=T)
    ended_after = await api.record(state="Success", start_date=T - DAY, end_date=T + DAY)
    await api.record(state="In progress", start_date=T - DAY)   # no end_date: never matches
    problems = []
    for form in T_FORMS:
        value = form.values[0]
        gte = uuids(await api.list(f"end_date__gte={value}&order_by=start_date"))
        lte = uuids(await api.list(f"end_date__lte={value}&order_by=start_date"))
        if (gte, lte) != ([ended_at["uuid"], ended_after["uuid"]],
                          [ended_before["uuid"], ended_at["uuid"]]):
            problems.append(form.id)
    assert not problems, f"date forms that did not bound end_date at T: {problems}"


async def test_date_filters_combine_with_others(api, dated):
    other = await api.record(start_date=T, user="alice")
    assert uuids(await api.list(f"start_date__gte={T}&start_date__lte={T}&user=alice")) == \
        [other["uuid"]]
    assert uuids(await api.list(f"start_date__gte={T}&start_date__lte={T}&user=producer")) == \
        [dated["at"]]


# ---------------------------------------------------------------------------- objects

async def test_object_with_and_without_namespace_segment(api):
    plain = await api.record(object="/api/app/v1/service/S1/")
    namespaced = await api.record(object="/api/app/v1/alice/service/S1/")
    await api.record(object="/api/app/v1/service/S2/")
    await api.record()
    expected = [namespaced["uuid"], plain["uuid"]]
    for query in ("/api/app/v1/service/S1/", "/api/app/v1/alice/service/S1/",
                  "/api/app/v1/bob/service/S1/"):
        page = await api.list(f"object={query}")
        assert uuids(page) == expected, query
        assert page["meta"]["total_count"] == 2
    # the action keeps the URI it was recorded with
    assert [a["object"] for a in (await api.list("object=/api/app/v1/service/S1/"))["objects"]] \
        == ["/api/app/v1/alice/service/S1/", "/api/app/v1/service/S1/"]
    assert uuids(await api.list("object=/api/app/v1/service/S3/")) == []


async def test_object_combines_with_every_other_filter(api):
    svc = "/api/app/v1/service/S1/"
    hit = await api.record(object=svc, state="Success", user="alice", action="Service Stop",
                           start_date=T, is_user_action=False)
    await api.record(object=svc, state="Failed", user="alice", action="Service Stop", start_date=T)
    await api.record(object=svc, state="Success", user="bob", action="Service Stop", start_date=T)
    await api.record(object=svc, state="Success", user="alice", action="Service Start",
                     start_date=T)
    await api.record(object=svc, state="Success", user="alice", action="Service Stop",
                     start_date=T + DAY)
    query = (f"object={svc}&state=Success&user=alice&action=Service+Stop&is_user_action=false"
             f"&start_date__lte={T}&uuid__startswith={hit['uuid'][:4]}&order_by=start_date")
    assert uuids(await api.list(query)) == [hit["uuid"]]
    assert uuids(await api.list(f"object={svc}&uuid={hit['uuid']}")) == [hit["uuid"]]


# ---------------------------------------------------------------------------- include_related

APP = "/api/app/v1"
INFRA = "/api/infra/v1"
ST = f"{APP}/stack/ST/"
SV1, SV2 = f"{APP}/service/SV1/", f"{APP}/service/SV2/"
C1A, C1B, C2 = f"{APP}/container/C1A/", f"{APP}/container/C1B/", f"{APP}/container/C2/"
NC = f"{INFRA}/nodecluster/NC/"
N1, N2 = f"{INFRA}/node/N1/", f"{INFRA}/node/N2/"
OTHER_STACK = f"{APP}/stack/OTHER/"

# The graph: stack ST holds services SV1 and SV2; SV1 runs containers C1A and C1B, SV2 runs C2.
# Node cluster NC holds nodes N1 and N2. Some URIs are recorded with a namespace segment, and SV2's
# own action names no parents: its place in the graph comes from its container's `parents`.
RECORDINGS = [
    ("ST", dict(object=ST)),
    ("SV1", dict(object=SV1, parents=[ST])),
    ("SV2", dict(object=SV2)),
    ("C1A", dict(object=C1A, parents=[SV1, ST])),
    ("C1A", dict(object=f"{APP}/alice/container/C1A/",
                 parents=[f"{APP}/alice/service/SV1/", f"{APP}/alice/stack/ST/"])),
    ("C1B", dict(object=f"{APP}/alice/container/C1B/", parents=[f"{APP}/alice/service/SV1/", ST])),
    ("C2", dict(object=C2, parents=[SV2, ST])),
    ("NC", dict(object=NC)),
    ("N1", dict(object=f"{INFRA}/alice/node/N1/", parents=[NC])),
    ("N2", dict(object=N2, parents=[f"{INFRA}/alice/nodecluster/NC/"])),
    ("OTHER", dict(object=OTHER_STACK)),
    ("NONE", dict()),
]

# The seed page's table: container -> container, its service, its stack; service -> its
# containers, service, its stack; stack -> its services and all their containers, stack;
# node -> node, its cluster; node cluster -> its nodes, cluster. Never siblings.
RELATED = {
    C1A: {"C1A", "SV1", "ST"},
    C1B: {"C1B", "SV1", "ST"},
    C2: {"C2", "SV2", "ST"},
    SV1: {"C1A", "C1B", "SV1", "ST"},
    SV2: {"C2", "SV2", "ST"},
    ST: {"ST", "SV1", "SV2", "C1A", "C1B", "C2"},
    N1: {"N1", "NC"},
    N2: {"N2", "NC"},
    NC: {"NC", "N1", "N2"},
}
NAME_OF = {C1A: "C1A", C1B: "C1B", C2: "C2", SV1: "SV1", SV2: "SV2", ST: "ST", N1: "N1", N2: "N2",
           NC: "NC"}


@pytest.fixture
async def graph(api):
    """{name: [uuids of the actions on that object, newest first]}; "ALL" in recording order."""
    by_name = {"ALL": []}
    for name, fields in RECORDINGS:
        uuid = (await api.record(**fields))["uuid"]
        by_name.setdefault(name, []).insert(0, uuid)
        by_name["ALL"].append(uuid)
    return by_name


def _namespaced(uri: str, namespace: str = "bob") -> str:
    head, rest = uri.split("/v1/")
    return f"{head}/v1/{namespace}/{rest}"


async def test_include_related_follows_the_relationship_table(api, graph):
    problems = []
    for obj, names in RELATED.items():
        expected = {u for name in names for u in graph[name]}
        for query_uri in (obj, _namespaced(obj)):
            page = await api.list(f"object={query_uri}&include_related=true&limit=100")
            found = set(uuids(page))
            if found != expected or page["meta"]["total_count"] != len(expected):
                wrong = {n for n, us in graph.items() if n != "ALL" and set(us) & (found ^ expected)}
                problems.append(f"{query_uri}: wrong for the actions of {sorted(wrong)}")
        # without include_related (or with false): the object's own actions only
        own = graph[NAME_OF[obj]]
        for query in (f"object={obj}", f"object={obj}&include_related=false"):
            if uuids(await api.list(query)) != own:
                problems.append(f"{query}: not exactly the object's own actions")
    assert not problems, "\n".join(problems)


async def test_include_related_keeps_newest_first_and_combines(api, graph):
    page = await api.list(f"object={SV1}&include_related=true")
    # every action was recorded in the same second or later: newest first = reverse recording
    positions = [graph["ALL"].index(u) for u in uuids(page)]
    assert positions == sorted(positions, reverse=True)
    c1a_only = await api.list(f"object={SV1}&include_related=true&uuid={graph['C1A'][0]}")
    assert uuids(c1a_only) == [graph["C1A"][0]]


async def test_include_related_for_an_unknown_object_is_empty(api, graph):
    page = await api.list(f"object={APP}/service/NOPE/&include_related=true")
    assert page["objects"] == [] and page["meta"]["total_count"] == 0


# ---------------------------------------------------------------------------- pagination

def _query(path: str) -> dict:
    """The link's query parameters, without the position token `next` links may carry (an
    optimisation: following next seeks instead of skipping; limit and offset stay exact)."""
    query = dict(parse_qsl(urlsplit(path).query))
    query.pop("cursor", None)
    return query


async def test_pages_and_exact_meta(api):
    recorded = [(await api.record())["uuid"] for _ in range(7)][::-1]
    first = await api.list("limit=3")
    assert first["meta"] == {"limit": 3, "offset": 0, "total_count": 7, "previous": None,
                             "next": first["meta"]["next"]}
    assert uuids(first) == recorded[:3]
    assert urlsplit(first["meta"]["next"]).path == "/api/audit/v1/action/"
    assert _query(first["meta"]["next"]) == {"limit": "3", "offset": "3"}

    middle = await api.list("limit=3&offset=3")
    assert uuids(middle) == recorded[3:6]
    assert _query(middle["meta"]["previous"]) == {"limit": "3", "offset": "0"}
    assert _query(middle["meta"]["next"]) == {"limit": "3", "offset": "6"}

    last = await api.list("limit=3&offset=6")
    assert uuids(last) == recorded[6:]
    assert last["meta"]["next"] is None
    assert last["meta"]["limit"] == 3 and last["meta"]["offset"] == 6
    assert last["meta"]["total_count"] == 7

    exact_end = await api.list("limit=7")
    assert uuids(exact_end) == recorded and exact_end["meta"]["next"] is None

    beyond = await api.list("limit=3&offset=20")
    assert beyond["objects"] == [] and beyond["meta"]["next"] is None
    assert beyond["meta"]["total_count"] == 7 and beyond["meta"]["offset"] == 20
    assert beyond["meta"]["previous"] is not None


async def test_meta_types_and_defaults(api):
    await api.record()
    meta = (await api.list())["meta"]
    assert set(meta) == {"limit", "next", "offset", "previous", "total_count"}
    assert meta == {"limit": 25, "next": None, "offset": 0, "previous": None, "total_count": 1}
    assert all(type(meta[k]) is int for k in ("limit", "offset", "total_count"))


async def test_sdk_style_paging_with_offset_plus_limit(api):
    """python-dockercloud re-requests with offset = meta.offset + meta.limit until it has
    total_count objects."""
    recorded = [(await api.record(state="Success", user="alice"))["uuid"] for _ in range(8)][::-1]
    await api.record(state="Failed", user="alice")
    seen, meta = [], {"offset": 0, "limit": 0}
    while True:
        page = await api.list(f"state=Success&limit=3&offset={meta['offset'] + meta['limit']}")
        meta = page["meta"]
        seen += uuids(page)
        if len(seen) >= meta["total_count"]:
            break
    assert seen == recorded


@pytest.mark.parametrize("order", ["-start_date", "start_date"])
async def test_next_and_previous_keep_every_filter_and_are_followable(api, order):
    wanted = []
    for i in range(7):
        wanted.append((await api.record(state="Success", user="alice", start_date=T + i,
                                        object=SV1, action="Service Stop"))["uuid"])
        await api.record(state="Failed", user="alice", start_date=T + i, object=SV1)
    if order == "-start_date":
        wanted.reverse()
    filters = {"state": "Success", "user": "alice", "object": SV1, "action": "Service Stop",
               "start_date__gte": "Wed, 17 Sep 2014 08:26:22 +0000", "order_by": order,
               "is_user_action": "true"}
    first = "/api/audit/v1/action/?" + "&".join(
        f"{k}={v.replace(' ', '%20').replace('+', '%2B').replace(',', '%2C')}"
        for k, v in filters.items()) + "&limit=2"

    seen, path, pages = [], first, []
    while path:
        assert path.startswith("/api/"), path
        resp = await api.get(path)
        assert resp.status == 200, await resp.text()
        page = await resp.json()
        pages.append(page)
        seen += uuids(page)
        if page["meta"]["next"]:
            kept = _query(page["meta"]["next"])
            assert {k: kept[k] for k in filters} == filters
        path = page["meta"]["next"]
    assert seen == wanted
    assert [p["meta"]["offset"] for p in pages] == [0, 2, 4, 6]

    # walk back with previous from the last page
    seen_back, path = [], pages[-1]["meta"]["previous"]
    while path:
        page = await (await api.get(path)).json()
        assert _query(path).items() >= filters.items()
        seen_back = uuids(page) + seen_back
        path = page["meta"]["previous"]
    assert seen_back == wanted[:6]


async def test_go_client_style_next_following(api):
    """go-dockercloud cuts the first 5 characters ('/api/') off `next` and prefixes its base."""
    recorded = [(await api.record(user="alice"))["uuid"] for _ in range(5)][::-1]
    seen, path = [], "/api/audit/v1/action/?user=alice&limit=2"
    while path:
        page = await (await api.get(path)).json()
        seen += uuids(page)
        nxt = page["meta"]["next"]
        path = "/api/" + nxt[5:] if nxt else None
    assert seen == recorded


async def test_namespaced_list_path_pages_on_the_namespaced_path(api):
    for _ in range(3):
        await api.record(user="alice")
    page = await api.list("limit=2", as_="alice", path="/api/audit/v1/alice/action/")
    assert urlsplit(page["meta"]["next"]).path == "/api/audit/v1/alice/action/"
    nxt = await api.get(page["meta"]["next"], as_="alice")
    assert len((await nxt.json())["objects"]) == 1


async def test_limit_is_capped_at_1000_and_zero_means_the_cap(api):
    await asyncio.gather(*(api.record() for _ in range(1001)))
    for query in ("limit=5000", "limit=1000", "limit=0", "limit=1001"):
        page = await api.list(query)
        assert page["meta"]["limit"] == 1000, query
        assert len(page["objects"]) == 1000
        assert page["meta"]["total_count"] == 1001
        assert _query(page["meta"]["next"]) == {"limit": "1000", "offset": "1000"}
    last = await api.list("limit=0&offset=1000")
    assert len(last["objects"]) == 1 and last["meta"]["next"] is None
    assert _query(last["meta"]["previous"]) == {"limit": "1000", "offset": "0"}


@pytest.mark.parametrize("query, parameter", [
    ("limit=-1", "limit"), ("limit=abc", "limit"), ("limit=1.5", "limit"), ("limit=", "limit"),
    ("limit=1e3", "limit"), ("offset=-3", "offset"), ("offset=x", "offset"),
    ("offset=2.0", "offset"), ("offset=", "offset"),
])
async def test_bad_limit_or_offset_is_400(api, query, parameter):
    await api.record()
    message = await error_of(await api.get("/api/audit/v1/action/?" + query), 400)
    assert parameter in message
    assert "integer" in message


async def test_extreme_but_valid_date_bounds(api, dated):
    everything = [dated["day_after"], dated["second_after"], dated["at"], dated["day_before"]]
    for query in ("start_date__gte=0001-01-01", "start_date__lte=9999-12-31T23:59:59Z",
                  "start_date__gte=-62135596800&start_date__lte=253402300799",
                  "start_date__lte=Fri,%2031%20Dec%209999%2023:59:59%20%2B0000"):
        assert uuids(await api.list(query)) == everything, query


async def test_links_stay_valid_json_with_quotes_and_non_ascii_in_a_filter(api):
    """The links are written into the JSON by hand: a filter with a quote, a backslash and a
    non-ASCII letter must come back escaped, and the link must still be followable."""
    who = 'zoë "q" \\ x'
    recorded = [(await api.record(user=who))["uuid"] for _ in range(3)][::-1]
    seen, path = [], "/api/audit/v1/action/?user=zo%C3%AB%20%22q%22%20%5C%20x&limit=2"
    while path:
        resp = await api.get(path)
        assert resp.status == 200, await resp.text()
        page = json.loads(await resp.text())
        seen += uuids(page)
        path = page["meta"]["next"]
        if path:
            assert _query(path)["user"] == who
    assert seen == recorded
