"""`location` from a MaxMind City database when one is configured; fixed labels otherwise."""
import os

import maxminddb
import pytest

from conftest import Api
from auditd.http.app import create_app
from auditd.config import Config
from auditd.http.appkeys import STORE

geolite2 = pytest.importorskip("_maxminddb_geolite2", reason="maxminddb-geolite2 (test extra) "
                                                             "ships the GeoLite2 City file")
CITY_DB = os.path.join(os.path.dirname(geolite2.__file__), "GeoLite2-City.mmdb")


@pytest.fixture
async def geo_api(aiohttp_client, tmp_path):
    config = Config(db=str(tmp_path / "auditd.db"), geoip_db=CITY_DB)
    client = await aiohttp_client(create_app(config))
    key = await client.server.app[STORE].add_user("producer", "producer")
    return Api(client, {"producer": key})


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
