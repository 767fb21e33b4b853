"""The management web UI in a real browser: headless Chromium driven by selenium
(browser.py; skipped with the reason when Chromium or its driver is missing), against the
broker started by the suite, with pika and the HTTP API on the other side.

Every check waits for what the page shows (WebDriverWait with deadlines); the UI refreshes
its page every 5 s, so counts changed by pika show within a refresh or two."""
import json
import time
import urllib.parse

import pika
import pytest

from browser import Ui, driver, ui  # noqa: F401  (the fixtures)
from conftest import uniq
from httpapi import ALL, Api, Registry, api, q, reg  # noqa: F401


@pytest.fixture
def ch(broker):
    c = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker, credentials=pika.PlainCredentials("guest", "guest")))
    yield c.channel()
    if c.is_open:
        c.close()


def queue_hash(name, vhost="/"):
    return "queues/" + urllib.parse.quote(vhost, safe="") + "/" + urllib.parse.quote(name, safe="")


def test_login_and_logout(ui):
    ui.open()
    ui.one("#login-form")
    ui.screenshot("login")
    ui.login("guest", "guest")
    assert "administrator" in ui.text("#who-tags")
    nav = [a.text for a in ui.css("#nav a")]
    assert "Queues" in nav and "Users" in nav
    stored = ui.d.execute_script("return [Object.keys(sessionStorage).length, localStorage.length, location.href]")
    assert stored[0] == 1 and stored[1] == 0, stored
    assert "guest" not in stored[2]
    ui.wait(lambda: ui.css("[data-stat=queues] .stat-value"), message="overview counts")
    ui.screenshot("overview")
    ui.click("#logout")
    ui.one("#login-form")
    assert ui.d.execute_script("return sessionStorage.length") == 0
    assert ui.css("#top.hidden")


def test_assets_carry_the_security_and_caching_headers(http_url):
    import urllib.error
    import urllib.request

    with urllib.request.urlopen(http_url + "/") as r:
        assert "script-src 'self'" in r.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["X-Frame-Options"] == "DENY"
        assert r.headers["Referrer-Policy"] == "no-referrer"
        assert r.headers["Cache-Control"] == "no-cache"
        assert b"<script" in r.read() and r.headers["Content-Type"].startswith("text/html")
    with urllib.request.urlopen(http_url + "/ui/js/app.js") as r:
        etag = r.headers["ETag"]
        assert r.headers["Content-Type"].startswith("text/javascript")
    req = urllib.request.Request(http_url + "/ui/js/app.js", headers={"If-None-Match": etag})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 304
    for missing in ("/ui/js/nope.js", "/ui/README.md", "/ui/../Cargo.toml"):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(http_url + missing)
        assert e.value.code == 404, missing
        assert "script-src 'self'" in e.value.headers["Content-Security-Policy"]


def test_pages_raise_no_content_security_policy_violation(ui, ch, reg):
    name = reg.queue("uicsp")
    ch.queue_declare(name)
    ch.basic_publish("", name, b"<script>alert(1)</script>", pika.BasicProperties(headers={"h": "<img src=x onerror=alert(2)>"}))
    ui.login()
    ui.csp_violations()
    for page in ("", "queues", queue_hash(name)):
        ui.open(page)
        ui.one("#view .heading")
    ui.click("[data-role=browse]")
    ui.wait(lambda: "<script>" in ui.text("[data-role=browse-result] [data-role=payload]"), message="body shown as text")
    assert not ui.css("[data-role=browse-result] img, [data-role=browse-result] script")
    assert ui.csp_violations() == []


def test_wrong_password_shows_the_apis_error(ui):
    ui.login("guest", "not-the-password", expect_ok=False)
    ui.wait(lambda: ui.text("#login-error") != "", message="no login error shown")
    assert ui.text("#login-error") == "Login failed"
    assert ui.d.execute_script("return sessionStorage.length") == 0
    assert ui.css("#login-form")


def test_queue_appears_and_its_ready_count_follows_publishes(ui, ch, reg):
    name = reg.queue("uiq")
    ch.queue_declare(name)
    ui.login()
    ui.open("queues")
    ui.one("[data-table=queues] [data-role=filter]").send_keys(name)
    row = f"[data-table=queues] a[data-queue='{name}']"
    ui.one(row)

    def ready():
        cells = ui.css(f"[data-table=queues] tbody tr")
        for tr in cells:
            if tr.find_elements("css selector", f"a[data-queue='{name}']"):
                return tr.find_elements("css selector", "td")[6].text
        return None

    ui.wait(lambda: ready() == "0", message="ready 0")
    for i in range(3):
        ch.basic_publish("", name, f"m{i}".encode())
    ui.wait(lambda: ready() == "3", timeout=20, message="ready 3 after publishing")
    ui.screenshot("queues")


def test_browse_shows_a_message_without_taking_it(ui, ch, reg):
    name = reg.queue("uibrowse")
    ch.queue_declare(name)
    body = {"order": 42, "item": "<b>tea</b>"}
    ch.basic_publish("", name, json.dumps(body).encode(), pika.BasicProperties(content_type="application/json", headers={"x-trace": "trace-7"}))
    ui.login()
    ui.open(queue_hash(name))
    ui.click("[data-role=browse]")
    ui.wait(lambda: '"order": 42' in ui.text("[data-role=browse-result] [data-role=payload]"), message="browsed body")
    assert "<b>tea</b>" in ui.text("[data-role=browse-result] [data-role=payload]")  # as text, not markup
    assert "trace-7" in ui.text("[data-role=browse-result] [data-role=headers]")
    assert ui.text("[data-role=browse-result] [data-role=redelivered]") == "no"
    # hex view of the same body
    ui.click("[data-role=browse-result] [data-mode=hex]")
    ui.wait(lambda: ui.text("[data-role=browse-result] [data-role=payload]").startswith("00000000  7b 22"), message="hex view")
    ui.click("[data-role=browse-result] [data-mode=json]")
    ui.d.execute_script("document.querySelector('[data-role=browse]').closest('section').scrollIntoView()")
    ui.screenshot("queue-browse")
    method, props, got = ch.basic_get(name, auto_ack=True)
    assert method is not None and method.redelivered is False
    assert json.loads(got) == body and props.headers == {"x-trace": "trace-7"}


def test_dead_letters_move_back_to_their_origin(ui, ch, reg, api):
    dlx, dlq, origin = reg.exchange("uidlx"), reg.queue("uidlq"), reg.queue("uiorigin")
    ch.exchange_declare(dlx, "fanout")
    ch.queue_declare(dlq)
    ch.queue_bind(dlq, dlx)
    ch.queue_declare(origin, arguments={"x-dead-letter-exchange": dlx})
    for i in range(5):
        ch.basic_publish("", origin, f"dead-{i}".encode())
    for _ in range(5):
        method, _, _ = ch.basic_get(origin)
        ch.basic_reject(method.delivery_tag, requeue=False)
    deadline = time.monotonic() + 10
    while ch.queue_declare(dlq, passive=True).method.message_count < 5:
        assert time.monotonic() < deadline, "dead letters did not arrive"
        time.sleep(0.05)
    ui.login()
    ui.open(queue_hash(dlq))
    ui.wait(lambda: ui.one("[data-role=move-count]").get_attribute("value") == "5", message="move count preset to ready")
    ui.click("[data-role=move-submit]")
    ui.wait(lambda: ui.text("[data-role=move-status]").startswith("moved 5 of 5"), message="move finished")
    assert "stopped" not in ui.text("[data-role=move-status]")
    ui.d.execute_script("document.querySelector('[data-role=move]').closest('section').scrollIntoView()")
    ui.screenshot("queue-move")
    got = []
    deadline = time.monotonic() + 10
    while len(got) < 5 and time.monotonic() < deadline:
        method, _, b = ch.basic_get(origin, auto_ack=True)
        if method:
            got.append(b.decode())
    assert sorted(got) == [f"dead-{i}" for i in range(5)]
    assert ch.queue_declare(dlq, passive=True).method.message_count == 0


def test_move_from_a_queue_without_x_death_shows_the_stop_reason(ui, ch, reg):
    name = reg.queue("uinodeath")
    ch.queue_declare(name)
    ch.basic_publish("", name, b"plain")
    ui.login()
    ui.open(queue_hash(name))
    ui.wait(lambda: ui.one("[data-role=move-count]").get_attribute("value") == "1", message="count preset")
    ui.click("[data-role=move-submit]")
    ui.wait(lambda: "stopped" in ui.text("[data-role=move-status]"), message="stop reason shown")
    assert ui.text("[data-role=move-status]").startswith("moved 0 of 1")
    assert ch.queue_declare(name, passive=True).method.message_count == 1


def test_monitoring_user_sees_queues_but_a_delete_is_refused(ui, ch, reg, api):
    name = reg.queue("uimon")
    ch.queue_declare(name)
    # read-only in "/", as RabbitMQ's monitoring users need a permission in a vhost to open
    # one of its queues (its list shows every vhost's)
    user = reg.user("uimonitor", password="pw", tags="monitoring", perms={"configure": "", "write": "", "read": ".*"})
    ui.login(user, "pw")
    nav = [a.text for a in ui.css("#nav a")]
    assert "Queues" in nav and "Users" not in nav
    ui.open("queues")
    ui.one("[data-table=queues] [data-role=filter]").send_keys(name)
    ui.click(f"[data-table=queues] a[data-queue='{name}']")
    ui.click("[data-role=delete]")
    ui.click("[data-role=confirm-ok]")
    ui.wait(lambda: ui.banner() != "", message="refusal shown")
    shown = ui.banner()
    refused = api.as_user(user, "pw").delete(f"/api/queues/%2F/{q(name)}")
    assert refused.status in (401, 403), refused
    assert shown == refused.reason()
    assert api.get(f"/api/queues/%2F/{q(name)}").status == 200
    assert ui.d.current_url.endswith(queue_hash(name))


def declare_many(port, names):
    """Declares the queues without waiting for each answer (nowait), then one with: the
    broker answers in order, so when it answers all are there."""
    c = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, credentials=pika.PlainCredentials("guest", "guest")))
    try:
        ch = c.channel()
        for i, n in enumerate(names):
            ch._impl.queue_declare(n)  # no callback: nowait
            if i % 500 == 499:
                c.process_data_events(0)
        ch.queue_declare(uniq("ui-last"))
    finally:
        c.close()


def test_ten_thousand_queues_render_their_first_page_in_under_a_second(driver, own_broker_factory):  # noqa: F811
    b = own_broker_factory()
    declare_many(b.port, [f"bulk-{i:05d}" for i in range(10_000)])
    assert Api(b.http_url).json("/api/overview")["object_totals"]["queues"] >= 10_000
    ui = Ui(driver, b.http_url)
    try:
        ui.login()
        ui.wait(lambda: ui.css("[data-stat=queues]"), message="overview")
        elapsed = driver.execute_async_script(
            """
            const done = arguments[arguments.length - 1];
            const t0 = performance.now();
            const seen = () => document.querySelector('[data-table=queues] tbody a[data-queue]');
            const obs = new MutationObserver(() => {
              if (seen()) { obs.disconnect(); done(performance.now() - t0); }
            });
            obs.observe(document.getElementById('view'), {childList: true, subtree: true});
            document.querySelector('#nav a[data-path=queues]').click();
            """
        ) / 1000.0
        rows = ui.css("[data-table=queues] tbody tr")
        print(f"\nqueues page, 10,000 queues: first page ({len(rows)} rows) in the DOM {elapsed * 1000:.0f} ms after the click")
        assert len(rows) == 100
        assert "10,001 items" in ui.text("[data-table=queues] [data-role=count]")
        assert elapsed < 1.0, f"first page took {elapsed:.3f} s"
    finally:
        ui.logout()
