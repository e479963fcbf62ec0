"""The web console (issue 14) in a real browser: headless Chromium driven by Playwright against a
real `auditd serve` process. Each test signs in as users of its own, so the tests share one
server without seeing each other's actions."""
import csv
import io
import json
import re
from pathlib import Path

import pytest

from conftest import ServerProcess
from console_helpers import Client, add_user, need_browser, rows, sign_in
from console_helpers import browser  # noqa: F401 - the fixture

sync_api = need_browser()
expect = sync_api.expect

XSS = "<img src=x onerror=window.__xss=1>"
LIVE = 1_000          # ms: a change made through the API shows within a second


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1360, "height": 900}, accept_downloads=True)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and
            "Content Security Policy" in m.text else None)
    yield page
    context.close()
    assert not errors, errors       # no script error, no CSP violation


@pytest.fixture(scope="module")
def producer(module_server):
    return Client(module_server, "feeder", add_user(module_server, "feeder", "producer"))


def user(srv, name):
    return name, add_user(srv, name)


# ---------------------------------------------------------------------------- sign in and out

def test_sign_in_see_the_timeline_and_sign_out(page, module_server, producer):
    name, key = user(module_server, "ann")
    first = producer.record(user=name, action="Stack Create", object="/api/app/v1/stack/s1/",
                            state="Success")
    second = producer.record(user=name, action="Service Redeploy", state="Failed",
                             object="/api/app/v1/service/w1/", ip="10.1.2.3")
    # `/` leads to the console, which asks for a user and key
    page.goto(module_server.url + "/")
    expect(page).to_have_url(module_server.url + "/ui/")
    expect(page.locator("#signin-form")).to_be_visible()

    page.fill("#signin-form input[name=user]", name)
    page.fill("#signin-form input[name=key]", "wrong-key")
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#signin-error")).to_have_text("Unknown user or wrong API key.")

    sign_in(page, module_server, name, key)
    expect(page.locator("#whoami")).to_have_text(name)
    # newest first, with the Docker Cloud columns
    expect(rows(page).locator("td[data-label=Action]")).to_have_text(
        ["Service Redeploy", "Stack Create"])
    top = rows(page).first
    expect(top.locator("td[data-label=State]")).to_have_text("Failed")
    expect(top.locator("td[data-label=State] .state")).to_have_class(re.compile("state-failed"))
    expect(top.locator("td[data-label=Object]")).to_have_text("/api/app/v1/service/w1/")
    expect(top.locator("td[data-label=User]")).to_have_text(name)
    expect(top.locator("td[data-label='IP / location'] span")).to_have_text(["10.1.2.3",
                                                                              "Private network"])
    expect(top.locator("td[data-label='User agent']")).to_contain_text("docker-cloud-cli/1.0.9")
    expect(top.locator("td[data-label=Start]")).to_have_text("just now")
    # the exact time on hover
    assert second["start_date"][-14:-6] in (top.locator("time").get_attribute("title") or "")
    expect(page.locator("#count")).to_have_text("Showing 2 of 2 actions, newest first")
    expect(page.locator("#live-status")).to_have_text("Live")
    # the key is in this tab's sessionStorage, not in the URL or a cookie
    stored = json.loads(page.evaluate("sessionStorage.getItem('auditd.console.session')"))
    assert stored == {"user": name, "key": key}
    assert key not in page.url and not page.context.cookies()
    expect(rows(page).last).to_have_attribute("data-uuid", first["uuid"])

    page.click("#signout")
    expect(page.locator("#signin-form")).to_be_visible()
    expect(rows(page)).to_have_count(0)
    assert page.evaluate("sessionStorage.length") == 0
    page.reload()
    expect(page.locator("#signin-form")).to_be_visible()


# ---------------------------------------------------------------------------- filters

def test_filters_from_the_url_and_the_form_and_back_and_forward(page, module_server, producer):
    name, key = user(module_server, "fay")
    producer.record(user=name, action="Node Deploy", state="Failed",
                    object="/api/app/v1/node/n1/", parents=["/api/app/v1/nodecluster/c1/"])
    producer.record(user=name, action="Node Cluster Scale", state="Success",
                    object="/api/app/v1/nodecluster/c1/")
    producer.record(user=name, action="Service Start", state="Success",
                    object="/api/app/v1/service/other/")
    sign_in(page, module_server, name, key, path="/ui/?state=Failed")
    expect(rows(page).locator("td[data-label=Action]")).to_have_text(["Node Deploy"])
    expect(page.locator("#f-state")).to_have_value("Failed")

    # the form: an object and its related actions; the URL carries the API's parameters
    page.select_option("#f-state", "")
    page.fill("#f-object", "/api/app/v1/nodecluster/c1/")
    page.check("#f-related")
    page.click("#filters button[type=submit]")
    expect(page).to_have_url(re.compile(r"/ui/\?object=%2Fapi%2Fapp%2Fv1%2Fnodecluster%2Fc1%2F"
                                        r"&include_related=true$"))
    expect(rows(page).locator("td[data-label=Action]")).to_have_text(
        ["Node Cluster Scale", "Node Deploy"])

    page.fill("#f-action", "Node Deploy")
    page.press("#f-action", "Enter")
    expect(rows(page)).to_have_count(1)
    assert "action=Node+Deploy" in page.url

    page.go_back()
    expect(rows(page)).to_have_count(2)
    expect(page.locator("#f-action")).to_have_value("")
    page.go_back()
    expect(rows(page).locator("td[data-label=Action]")).to_have_text(["Node Deploy"])
    expect(page.locator("#f-state")).to_have_value("Failed")
    page.go_forward()
    expect(rows(page)).to_have_count(2)

    # a preset range, the uuid prefix, and a bad value reported by the API's own message
    page.goto(module_server.url + "/ui/")
    page.select_option("#f-range", "3600")
    expect(page).to_have_url(re.compile(r"start_date__gte=\d{4}-\d\d-\d\dT\d\d%3A\d\d%3A\d\dZ"))
    expect(rows(page)).to_have_count(3)
    page.goto(module_server.url + "/ui/?start_date__gte=yesterday-ish")
    expect(page.locator("#banner")).to_contain_text("start_date__gte")


# ---------------------------------------------------------------------------- one action, live

def test_action_page_follows_the_log_live_and_cancel_and_retry(page, module_server, producer):
    name, key = user(module_server, "ida")
    action = producer.record(user=name, action="Service Redeploy", object="/api/app/v1/service/s9/",
                             parents=["/api/app/v1/stack/k9/"], body={"image": "web:2"})
    parent = producer.record(user=name, action="Stack Update", object="/api/app/v1/stack/k9/",
                             state="Success")
    producer.append(action["uuid"], ["pulling web:2", "starting 3 containers"])
    sign_in(page, module_server, name, key)
    page.get_by_role("link", name="Service Redeploy").click()
    expect(page).to_have_url(module_server.url + f"/ui/action/{action['uuid']}")
    expect(page.locator("#a-title")).to_have_text("Service Redeploy")
    log = page.locator("#log .line .text")
    expect(log).to_have_text(["pulling web:2", "starting 3 containers"])
    expect(page.locator("#log-status")).to_have_text("Following live")
    # every field, the raw JSON, the related actions
    expect(page.locator("#a-fields dt")).to_have_count(len(action))
    assert json.loads(page.locator("#a-raw").text_content())["uuid"] == action["uuid"]
    expect(page.locator("#a-related a")).to_have_text(["Stack Update"])
    expect(page.locator("#a-related a")).to_have_attribute("href", f"/ui/action/{parent['uuid']}")

    # appended lines arrive, once each, in order
    producer.append(action["uuid"], ["container 1 up", "container 2 up"])
    expect(log).to_have_text(["pulling web:2", "starting 3 containers", "container 1 up",
                              "container 2 up"], timeout=LIVE)
    producer.append(action["uuid"], "container 3 up")
    expect(log.last).to_have_text("container 3 up", timeout=LIVE)
    expect(log).to_have_count(5)

    # cancel: In progress becomes Canceling; the producer finishes the move, seen live
    expect(page.locator("#a-retry")).to_be_hidden()
    page.click("#a-cancel")
    expect(page.locator("#a-state")).to_have_text("Canceling")
    producer.append(action["uuid"], "stopping")
    producer.state(action["uuid"], "Canceled")
    expect(page.locator("#a-state")).to_have_text("Canceled", timeout=LIVE)
    expect(page.locator("#log-status")).to_have_text("Complete: the action has ended")
    expect(log).to_have_count(6)
    expect(page.locator("#a-cancel")).to_be_hidden()

    # retry records a new action, and the console goes there
    page.click("#a-retry")
    expect(page).not_to_have_url(re.compile(action["uuid"]))
    expect(page).to_have_url(re.compile(r"/ui/action/[0-9a-f-]{36}$"))
    expect(page.locator("#a-state")).to_have_text("Pending")
    expect(page.locator("#a-fields")).to_contain_text(name)      # the retrying user
    page.go_back()
    expect(page.locator("#a-state")).to_have_text("Canceled")
    page.get_by_role("link", name="← All actions").click()
    expect(rows(page)).to_have_count(3)


def test_a_big_log_keeps_the_last_lines_in_the_page(page, module_server, producer):
    name, key = user(module_server, "bea")
    action = producer.record(user=name, action="Stack Deploy")
    for start in (1, 6001):       # at most 10,000 lines a request
        producer.append(action["uuid"], "\n".join(f"line {i}" for i in range(start, start + 6000)))
    sign_in(page, module_server, name, key, path=f"/ui/action/{action['uuid']}")
    expect(page.locator("#log-note")).to_have_text(   # read in chunks: slow on a busy machine
        "12,000 lines; the page keeps the last 5,000. Download the log for all of them.",
        timeout=30_000)
    expect(page.locator("#log .line")).to_have_count(5000)
    expect(page.locator("#log .line .text").first).to_have_text("line 7001")
    producer.append(action["uuid"], ["line 12001"])
    expect(page.locator("#log .line .text").last).to_have_text("line 12001", timeout=LIVE)
    expect(page.locator("#log .line")).to_have_count(5000)
    with page.expect_download() as info:
        page.click("#log-download")
    text = Path(info.value.path()).read_text(encoding="utf-8").splitlines()
    assert len(text) == 12_001 and text[0].endswith(" line 1") and text[-1].endswith("line 12001")


def test_following_100000_lines_keeps_the_page_responsive(page, module_server, producer):
    name, key = user(module_server, "hal")
    action = producer.record(user=name, action="Big Build")
    messages = []       # what the log's WebSocket delivers: a message event each
    page.on("websocket", lambda ws: ws.on("framereceived", lambda m: messages.append(m))
            if "/logs/" in ws.url else None)
    sign_in(page, module_server, name, key, path=f"/ui/action/{action['uuid']}")
    expect(page.locator("#log-status")).to_have_text("Following live")
    # how long the page's main thread goes without running a 20 ms timer
    page.evaluate("""() => { window.__gaps = []; let last = performance.now();
        setInterval(() => { const now = performance.now(); __gaps.push(now - last); last = now; },
                    20); }""")
    for start in range(1, 100_001, 10_000):
        producer.append(action["uuid"], "\n".join(f"step {i}" for i in range(start, start + 10_000)))
    expect(page.locator("#log .line .text").last).to_have_text("step 100000", timeout=90_000)
    expect(page.locator("#log-note")).to_have_text(
        "100,000 lines; the page keeps the last 5,000. Download the log for all of them.")
    expect(page.locator("#log .line")).to_have_count(5000)
    expect(page.locator("#log .line .text").first).to_have_text("step 95001")
    # The lines come in arrays, a message per write of the server, not one per line: 100,000
    # message events kept the main thread busy for seconds on a slow machine.
    assert len(messages) < 1000, f"{len(messages)} messages for 100,000 lines"
    gaps = page.evaluate("window.__gaps")
    assert max(gaps) < 2000, f"the page froze for {max(gaps):.0f} ms"


# ---------------------------------------------------------------------------- live timeline

def test_timeline_is_live_with_a_pause(page, module_server, producer):
    name, key = user(module_server, "liv")
    producer.record(user=name, action="Service Create")
    sign_in(page, module_server, name, key, path="/ui/?state=In%20progress")
    expect(rows(page)).to_have_count(1)
    expect(page.locator("#live-status")).to_have_text("Live")
    new = producer.record(user=name, action="Container Start")
    expect(rows(page).first.locator("td[data-label=Action]")).to_have_text("Container Start",
                                                                           timeout=LIVE)
    producer.record(user=name, action="Not Matching", state="Success")   # filtered out
    producer.state(new["uuid"], "Success")                               # shown: updated in place
    expect(rows(page).first.locator("td[data-label=State]")).to_have_text("Success", timeout=LIVE)
    expect(rows(page)).to_have_count(2)

    page.click("#pause")
    expect(page.locator("#pause")).to_have_attribute("aria-pressed", "true")
    paused = producer.record(user=name, action="Node Deploy")
    expect(page.locator("#live-status")).to_have_text("Paused · 1 action changed")
    expect(rows(page)).to_have_count(2)
    page.click("#pause")
    expect(rows(page).first).to_have_attribute("data-uuid", paused["uuid"], timeout=LIVE)
    expect(rows(page)).to_have_count(3)


def test_older_pages_follow_the_cursor_and_merge_with_live_rows(page, module_server, producer):
    name, key = user(module_server, "olga")
    recorded = [producer.record(user=name, action=f"Old {i}") for i in range(55)]
    sign_in(page, module_server, name, key)
    expect(rows(page)).to_have_count(50)
    expect(page.locator("#count")).to_have_text("Showing 50 of 55 actions, newest first")
    live = producer.record(user=name, action="Live One")
    expect(rows(page).first).to_have_attribute("data-uuid", live["uuid"], timeout=LIVE)
    page.click("#older")
    expect(rows(page)).to_have_count(56)
    expect(page.locator("#older")).to_be_hidden()
    uuids = [rows(page).nth(i).get_attribute("data-uuid") for i in range(56)]
    assert uuids == [live["uuid"]] + [a["uuid"] for a in reversed(recorded)]


def test_lost_connection_reconnects_without_losing_or_repeating(page, tmp_path):
    srv = ServerProcess(tmp_path / "restart.db").start()
    try:
        feeder = Client(srv, "feeder", add_user(srv, "feeder", "producer"))
        name, key = user(srv, "rex")
        before = [feeder.record(user=name, action=f"Before {i}") for i in range(3)]
        sign_in(page, srv, name, key)
        expect(rows(page)).to_have_count(3)
        expect(page.locator("#live-status")).to_have_text("Live")
        srv.stop()
        expect(page.locator("#live-status")).to_contain_text("Connection lost")
        srv.start()
        # changes while the console is not connected: a new action, and a state change
        during = feeder.record(user=name, action="During")
        feeder.state(before[0]["uuid"], "Failed")
        expect(page.locator("#live-status")).to_have_text("Live", timeout=20_000)
        expect(rows(page).locator("td[data-label=Action]")).to_have_text(
            ["During", "Before 2", "Before 1", "Before 0"])
        expect(rows(page).last.locator("td[data-label=State]")).to_have_text("Failed")
        after = feeder.record(user=name, action="After")
        expect(rows(page)).to_have_count(5, timeout=LIVE)
        uuids = [rows(page).nth(i).get_attribute("data-uuid") for i in range(5)]
        assert uuids == [after["uuid"], during["uuid"]] + [a["uuid"] for a in reversed(before)]
    finally:
        srv.stop()


# ---------------------------------------------------------------------------- safety

def test_fields_are_text_never_html(page, module_server, producer):
    name, key = user(module_server, "xena")
    action = producer.record(user=name, action=XSS, object=f"/api/app/v1/service/{XSS}/",
                             user_agent=XSS, body=XSS)
    producer.append(action["uuid"], [XSS, "<script>window.__xss=2</script>"])
    sign_in(page, module_server, name, key)
    expect(rows(page).first.locator("td[data-label=Action]")).to_have_text(XSS)
    expect(rows(page).first.locator("td[data-label='User agent']")).to_have_text(XSS)
    assert page.locator("#actions img").count() == 0
    rows(page).first.locator("a").click()
    expect(page.locator("#a-title")).to_have_text(XSS)
    expect(page.locator("#log .line .text")).to_have_text(
        [XSS, "<script>window.__xss=2</script>"])
    assert page.locator("main img, main script").count() == 0
    assert page.evaluate("typeof window.__xss") == "undefined"


def test_two_principals_never_see_each_others_actions(browser, module_server, producer):
    alice, alice_key = user(module_server, "amy")
    bob, bob_key = user(module_server, "bob2")
    mine = producer.record(user=alice, action="Amy Secret Deploy")
    theirs = producer.record(user=bob, action="Bob Secret Deploy")
    pages = {}
    for name, key in ((alice, alice_key), (bob, bob_key)):
        context = browser.new_context()
        pages[name] = context.new_page()
        sign_in(pages[name], module_server, name, key)
    expect(rows(pages[alice]).locator("td[data-label=Action]")).to_have_text(["Amy Secret Deploy"])
    expect(rows(pages[bob]).locator("td[data-label=Action]")).to_have_text(["Bob Secret Deploy"])
    # live: bob's new action reaches bob's page only
    producer.record(user=bob, action="Bob Second")
    expect(rows(pages[bob])).to_have_count(2, timeout=LIVE)
    producer.record(user=alice, action="Amy Second")
    expect(rows(pages[alice])).to_have_count(2, timeout=LIVE)
    expect(rows(pages[alice]).locator("td[data-label=Action]")).to_have_text(
        ["Amy Second", "Amy Secret Deploy"])
    # a link to the other's action shows nothing of it
    pages[bob].goto(module_server.url + f"/ui/action/{mine['uuid']}")
    expect(pages[bob].locator("#a-title")).to_have_text("No such action")
    expect(pages[bob].locator("#a-fields dt")).to_have_count(0)
    pages[alice].goto(module_server.url + f"/ui/?uuid__startswith={theirs['uuid'][:8]}")
    expect(pages[alice].locator("#empty")).to_be_visible()
    for p in pages.values():
        p.context.close()


# ---------------------------------------------------------------------------- export, keyboard, phone

def test_export_ndjson_and_csv_follow_every_page(page, module_server, producer):
    name, key = user(module_server, "eva")
    for i in range(3):
        producer.record(user=name, action=f"Export {i}", state="Success",
                        user_agent="=HYPERLINK(\"http://x\")" if i == 0 else "curl/8")
    producer.record(user=name, action="Not exported", state="Failed")
    sign_in(page, module_server, name, key, path="/ui/?state=Success")
    expect(rows(page)).to_have_count(3)
    with page.expect_download() as info:
        page.click("#export-ndjson")
    lines = Path(info.value.path()).read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["action"] for line in lines] == ["Export 2", "Export 1", "Export 0"]
    assert info.value.suggested_filename.endswith(".ndjson")
    with page.expect_download() as info:
        page.click("#export-csv")
    table = list(csv.DictReader(io.StringIO(Path(info.value.path()).read_text(encoding="utf-8"))))
    assert [r["action"] for r in table] == ["Export 2", "Export 1", "Export 0"]
    assert table[2]["user_agent"] == "'=HYPERLINK(\"http://x\")"     # never a live formula
    expect(page.locator("#export-status")).to_have_text("Exported 3 actions as CSV")


def test_keyboard_and_phone_width(page, module_server, producer):
    name, key = user(module_server, "kim")
    producer.record(user=name, action="Keyboard Deploy", object="/api/app/v1/service/" + "x" * 80)
    page.set_viewport_size({"width": 390, "height": 800})
    sign_in(page, module_server, name, key)
    expect(rows(page)).to_have_count(1)
    # nothing wider than the phone's screen
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.locator(".action-link").first.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#a-title")).to_have_text("Keyboard Deploy")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    # every form control has a label
    unlabelled = page.evaluate("""[...document.querySelectorAll('input, select')]
        .filter(e => !e.labels.length && !e.getAttribute('aria-label')).map(e => e.id)""")
    assert unlabelled == []
