"""`location` from a MaxMind City database when one is configured; fixed labels otherwise."""
import json
import os
import pickle
import shutil

import maxminddb
import pytest

from conftest import Api, error_of
from auditd.config import Config
from auditd.geo import Locator
from auditd.http.app import create_app
from auditd.http.appkeys import BODY_PARSER, STORE
from auditd.http.bodyparser import OFF_LOOP_BYTES

geolite2 = pytest.importorskip("_maxminddb_geolite2", reason="maxminddb-geolite2 (test extra) "
                                                             "ships the GeoLite2 City file")
CITY_DB = os.path.join(os.path.dirname(geolite2.__file__), "GeoLite2-City.mmdb")


@pytest.fixture
async def geo_api(aiohttp_client, tmp_path):
    config = Config(db=str(tmp_path / "auditd.db"), geoip_db=CITY_DB)
    client = await aiohttp_client(create_app(config))
    store = client.server.app[STORE]
    return Api(client, {"producer": await store.add_user("producer", "producer"),
                        "admin": await store.add_user("admin", "admin")})


def expected_location(ip):
    with maxminddb.open_database(CITY_DB) as reader:
        record = reader.get(ip)
    return f"{record['city']['names']['en']}, {record['country']['names']['en']}"


@pytest.mark.parametrize("ip", ["81.2.69.160", "128.101.101.101"])
async def test_a_public_address_gets_city_and_country_from_the_database(geo_api, ip):
    action = await geo_api.record(ip=ip)
    assert action["location"] == expected_location(ip)
    assert ", " in action["location"]


@pytest.mark.parametrize("ip, label", [("127.0.0.1", "Localhost"), ("::1", "Localhost"),
                                       ("10.1.2.3", "Private network"),
                                       ("192.168.0.7", "Private network"),
                                       ("not-an-ip", "")])
async def test_loopback_private_and_unknown_addresses_get_fixed_labels(geo_api, ip, label):
    assert (await geo_api.record(ip=ip))["location"] == label


async def test_without_a_database_public_addresses_have_no_location(api):
    assert (await api.record(ip="81.2.69.160"))["location"] == ""
    # the caller's own address is used when the producer sends none
    assert (await api.record())["location"] == "Localhost"


def _big_seed(ips) -> bytes:
    """A seed above OFF_LOOP_BYTES (its items are checked in the body parser's process), one item
    per address, without a location; then one that gives its own."""
    items = [{"action": "Service Deploy", "ip": ip} for ip in ips]
    items.append({"action": "Service Deploy", "ip": ips[0], "location": "Lisbon, Portugal"})
    return json.dumps(items).encode() + b" " * OFF_LOOP_BYTES


async def _seed(api, body):
    return await api.post("/_auditd/seed", as_="admin", data=body,
                          headers={"Content-Type": "application/json"})


async def test_a_big_seed_is_located_in_the_parser_process_as_here(geo_api):
    ips = ["81.2.69.160", "128.101.101.101", "10.1.2.3"]
    resp = await _seed(geo_api, _big_seed(ips))
    assert resp.status == 201, await resp.text()
    objects = (await resp.json())["objects"]
    assert [a["location"] for a in objects] == [
        expected_location(ips[0]), expected_location(ips[1]), "Private network",
        "Lisbon, Portugal"]
    assert geo_api.app[BODY_PARSER].pid not in (None, os.getpid())


def test_a_locator_travels_to_another_process_as_its_file():
    copy = pickle.loads(pickle.dumps(Locator(CITY_DB)))
    assert copy.database_path == CITY_DB
    assert copy.locate("81.2.69.160") == expected_location("81.2.69.160")
    assert pickle.loads(pickle.dumps(Locator())).locate("81.2.69.160") == ""


async def test_a_database_gone_since_the_start_is_a_503_and_the_parser_process_carries_on(
        aiohttp_client, tmp_path):
    path = tmp_path / "city.mmdb"
    shutil.copyfile(CITY_DB, path)
    client = await aiohttp_client(create_app(Config(db=str(tmp_path / "a.db"),
                                                    geoip_db=str(path))))
    api = Api(client, {"admin": await client.server.app[STORE].add_user("admin", "admin")})
    path.unlink()                    # the server keeps its open copy; the parser process cannot
    resp = await _seed(api, _big_seed(["81.2.69.160"]))
    message = await error_of(resp, 503)
    assert str(path) in message and "readable when the server started" in message
    assert (await api.list())["meta"]["total_count"] == 0
    small = await _seed(api, json.dumps([{"action": "A", "ip": "81.2.69.160"}]))
    assert small.status == 201
    assert (await small.json())["objects"][0]["location"] == expected_location("81.2.69.160")
    record = await api.post("/api/audit/v1/action/", json={"action": "B", "body": "b" * 100_000})
    assert record.status == 201, await record.text()      # another big body, parsed there
