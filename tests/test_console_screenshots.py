"""The console with a realistic data set, in a real browser: what the README's screenshots show.
With CONSOLE_SCREENSHOTS=1 it saves them, docs/console-timeline.png and docs/console-action.png."""
import time
from pathlib import Path

import pytest

from conftest import ServerProcess
from console_helpers import DOCS, SCREENSHOTS, Client, need_browser, rows, sign_in
from console_helpers import browser  # noqa: F401 - the fixture

expect = need_browser().expect
LIVE = 1_000


def _ago(seconds):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - seconds))


def test_a_realistic_timeline_and_action_page(browser, tmp_path):
    """Seeded like a small deployment. With CONSOLE_SCREENSHOTS=1 it saves the README's pictures,
    docs/console-timeline.png and docs/console-action.png."""
    geolite2 = pytest.importorskip("_maxminddb_geolite2", reason="maxminddb-geolite2 (test extra)")
    city_db = Path(geolite2.__file__).parent / "GeoLite2-City.mmdb"
    srv = ServerProcess(tmp_path / "shots.db", extra_args=["--geoip-db", str(city_db)]).start()
    try:
        admin = Client(srv, "admin", srv.admin_key)
        stack, web = "/api/app/v1/stack/8a1e5b2c/", "/api/app/v1/service/4f0c9d1e/"
        cli, sdk = "docker-cloud-cli/1.0.9", "python-dockercloud/1.0.12"
        browser_ua = "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"
        seed = [  # (seconds ago, duration or None, fields)
            (86400 * 2, 95, dict(action="Node Cluster Deploy", user="ops",
                                 object="/api/app/v1/nodecluster/2b7d/", state="Success",
                                 ip="185.85.184.57", user_agent=browser_ua)),
            (7300, 41, dict(action="Stack Create", user="alice", object=stack, state="Success",
                            ip="104.46.40.65", user_agent=cli)),
            (7200, 12, dict(action="Service Create", user="alice", object=web, parents=[stack],
                            state="Success", ip="104.46.40.65", user_agent=cli)),
            (3300, 180, dict(action="Service Scale", user="bob", object="/api/app/v1/service/77aa/",
                             state="Failed", ip="185.44.77.168", user_agent=sdk)),
            (2400, None, dict(action="Container Stop", user="bob", state="Pending",
                              object="/api/app/v1/container/c0ffee/", ip="185.44.77.168",
                              user_agent=sdk)),
            (1500, 64, dict(action="Node Upgrade", user="ops", object="/api/app/v1/node/91e3/",
                            state="Success", ip="10.4.0.12", user_agent="go-dockercloud/0.1",
                            is_user_action=False)),
            (600, 22, dict(action="Stack Update", user="alice", object=stack, state="Success",
                           ip="80.95.104.79", user_agent=cli)),
            (240, None, dict(action="Service Redeploy", user="alice", object=web, parents=[stack],
                             ip="80.95.104.79", user_agent=cli, body={"reuse_volumes": True})),
            (200, None, dict(action="Container Start", user="alice",
                             object="/api/app/v1/container/5e17ab/", parents=[web, stack],
                             state="In progress", ip="127.0.0.1", user_agent="auditd-runner/1",
                             is_user_action=False)),
            (30, None, dict(action="Service Start", user="carol", object="/api/app/v1/service/d00d/",
                            state="Pending", ip="185.56.175.9", user_agent=browser_ua)),
        ]
        recorded = {}
        for ago, took, fields in seed:
            fields["start_date"] = _ago(ago)
            if took is not None:
                fields["end_date"] = _ago(ago - took)
            recorded[fields["action"]] = admin.record(**fields)
        admin.state(recorded["Container Stop"]["uuid"], "Canceled")
        redeploy = recorded["Service Redeploy"]
        admin.append(redeploy["uuid"], [
            "Redeploying service web (3 containers) with reuse_volumes=true",
            "Pulling registry.example.com/shop/web:2.4.1",
            "2.4.1: Pulling from shop/web",
            "Digest: sha256:5b2f1e9c0d7a4c3e8f6a2b1d9e0c7f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e",
            "Status: Downloaded newer image for registry.example.com/shop/web:2.4.1",
            "web-1: stopping (grace period 10 s)", "web-1: stopped", "web-1: starting",
            "web-1: health check passed (200 OK in 38 ms)",
            "web-2: stopping (grace period 10 s)", "web-2: stopped", "web-2: starting",
        ])
        admin.append(redeploy["uuid"], [{"log": "web-2: health check failed once, retrying",
                                          "streamType": "stderr"}])
        admin.append(redeploy["uuid"], ["web-2: health check passed (200 OK in 41 ms)"])

        context = browser.new_context(viewport={"width": 1360, "height": 860})
        page = context.new_page()
        sign_in(page, srv, "admin", srv.admin_key)
        expect(rows(page)).to_have_count(len(seed))
        by_action = {r["action"]: r for r in recorded.values()}
        assert by_action["Stack Update"]["location"] == "Prague, Czechia"
        expect(page.locator("tr", has_text="Stack Update").locator("td[data-label='IP / location']")
               ).to_have_text("80.95.104.79Prague, Czechia")
        expect(page.locator("tr", has_text="Service Scale").locator("td[data-label=Duration]")
               ).to_have_text("3 min 0 s")
        expect(page.locator("tr", has_text="Node Upgrade").locator(".tag")).to_have_text("automatic")
        expect(page.locator("#live-status")).to_have_text("Live")
        admin.append(recorded["Container Start"]["uuid"], ["started"])   # no visible change
        if SCREENSHOTS:
            page.screenshot(path=str(DOCS / "console-timeline.png"), full_page=True)

        page.locator("a", has_text="Service Redeploy").click()
        expect(page.locator("#log .line")).to_have_count(14)
        expect(page.locator("#log .line-err .text")).to_have_text(
            "web-2: health check failed once, retrying")
        admin.append(redeploy["uuid"], ["web-3: stopping (grace period 10 s)"])
        expect(page.locator("#log .line")).to_have_count(15, timeout=LIVE)
        expect(page.locator("#a-related a")).to_have_text(
            ["Container Start", "Stack Update", "Service Create", "Stack Create"])
        if SCREENSHOTS:
            page.screenshot(path=str(DOCS / "console-action.png"), full_page=True)
        context.close()
    finally:
        srv.stop()
