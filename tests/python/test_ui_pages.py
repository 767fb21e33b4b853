"""The management UI's exchange, connection and admin pages in a real browser (headless
Chromium through selenium: browser.py, skipped with the reason when it is missing),
against the suite's broker, with pika and the HTTP API checking what the UI did.

Every check waits for what the page or the broker shows (deadlines, no sleeps)."""
import json
import os
import tempfile
import time
import urllib.parse

import pika
import pytest

from browser import driver, ui  # noqa: F401  (the fixtures)
from conftest import uniq
from httpapi import amqp, api, channel_error, eventually, q, reg, wait_closed  # noqa: F401  (fixtures)


def enc(*segments):
    return "/".join(urllib.parse.quote(s, safe="") for s in segments)


def fill(ui, selector, value):
    el = ui.one(selector)
    el.clear()
    el.send_keys(value)
    return el


def choose(ui, selector, value):
    from selenium.webdriver.support.ui import Select

    Select(ui.one(selector)).select_by_value(value)


def notice(ui):
    return ui.text("#banner.notice .banner-text")


def squash(text):
    """Text as the browser lays it out: runs of whitespace (the API's "\\n\\n") as one space."""
    return " ".join((text or "").split())




def rows(ui, table):
    """The text of each row of a table, read in one go in the page (never stale)."""
    return ui.d.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map((tr) => tr.innerText)",
        f"[data-table={table}] tbody tr",
    )


def confirm(ui):
    ui.click("[data-role=confirm-ok]")


def test_exchange_declare_bind_publish_and_delete(ui, api, reg, amqp):  # noqa: F811
    x, qn = reg.exchange("uix"), reg.queue("uixq")
    ch = amqp().channel()
    ch.queue_declare(qn)
    ui.login()
    ui.open("exchanges")
    fill(ui, "[data-role=declare-name]", x)
    choose(ui, "[data-role=declare-type]", "direct")
    ui.click("[data-role=declare-exchange-submit]")
    ui.wait(lambda: api.get(f"/api/exchanges/%2F/{q(x)}").status == 200, message="exchange declared")
    got = api.json(f"/api/exchanges/%2F/{q(x)}")
    assert (got["type"], got["durable"], got["auto_delete"], got["internal"]) == ("direct", True, False, False)
    ui.wait(lambda: notice(ui) == f"Exchange {x} declared.", message="notice")
    ui.one(f"[data-table=exchanges] a[data-exchange='{x}']")
    ui.screenshot("exchanges")
    fill(ui, "[data-table=exchanges] [data-role=filter]", "uix")
    ui.wait(lambda: all("uix" in r for r in rows(ui, "exchanges")), message="filtered")

    ui.click(f"[data-table=exchanges] a[data-exchange='{x}']")
    ui.one("[data-role=bindings-source]")
    choose(ui, "[data-role=bind-kind]", "q")
    fill(ui, "[data-role=bind-destination]", qn)
    fill(ui, "[data-role=bind-routing-key]", "to-q")
    ui.click("[data-role=bind-submit]")
    ui.wait(lambda: f"queue {qn}" in ui.text("[data-role=bindings-source]"), message="binding shown")
    bs = api.json(f"/api/bindings/%2F/e/{q(x)}/q/{q(qn)}")
    assert [b["routing_key"] for b in bs] == ["to-q"]

    # publish through it: routed to the queue, then one that nothing takes
    fill(ui, "[data-role=publish-routing-key]", "to-q")
    fill(ui, "[data-role=publish-payload]", "hello from the ui")
    ui.click("[data-role=publish-submit]")
    ui.wait(lambda: notice(ui) == "Message published.", message="published")
    def got():
        m, _, b = ch.basic_get(qn, auto_ack=True)
        assert m is not None, "nothing in the queue yet"
        return m, b

    method, body = eventually(got)
    assert body == b"hello from the ui" and method.exchange == x and method.routing_key == "to-q"
    fill(ui, "[data-role=publish-routing-key]", "nowhere")
    ui.click("[data-role=publish-submit]")
    ui.wait(lambda: ui.banner() == "Message published, but not routed.", message="unroutable shown")

    ui.click("[data-role=delete]")
    ui.click("[data-role=confirm-cancel]")
    assert api.get(f"/api/exchanges/%2F/{q(x)}").status == 200
    ui.click("[data-role=delete]")
    confirm(ui)
    ui.wait(lambda: ui.d.current_url.endswith("#/exchanges"), message="back to the list")
    assert api.get(f"/api/exchanges/%2F/{q(x)}").status == 404


def test_connection_listed_and_closed_with_a_reason(ui, api, amqp):  # noqa: F811
    label = uniq("ui-conn")
    conn = amqp(name=label)
    conn.channel()
    listed = eventually(lambda: [c for c in api.json("/api/connections") if c.get("user_provided_name") == label] or False)
    name = listed[0]["name"]
    ui.login()
    ui.open("connections")
    link = f"[data-table=connections] a[data-connection='{name}']"
    ui.one(link)
    row = [r for r in rows(ui, "connections") if label in r][0]
    assert "pika python client library" in row.lower() and "guest" in row
    ui.screenshot("connections")
    ui.click(link)
    ui.wait(lambda: "Pika Python Client Library" in ui.text("[data-role=client-properties]"), message="client properties")
    assert "publisher_confirms" in ui.text("[data-role=client-properties]")  # its capabilities
    ui.wait(lambda: not ui.css("[data-role=channels] tbody tr.empty"), message="its channel listed")
    ui.screenshot("connection")
    fill(ui, "[data-role=close-reason]", "maintenance from the ui")
    ui.click("[data-role=close-submit]")
    confirm(ui)
    closed = wait_closed(conn)
    assert closed.reply_code == 320
    assert closed.reply_text == "CONNECTION_FORCED - maintenance from the ui"
    ui.wait(lambda: ui.d.current_url.endswith("#/connections"), message="back to the list")
    eventually(lambda: api.get(f"/api/connections/{q(name)}").status == 404)


def test_add_a_user_and_its_permissions_then_it_logs_in(ui, api, reg, broker):
    name = uniq("uiuser")
    reg.users.append(name)
    ui.login()
    ui.open("users")
    fill(ui, "[data-role=user-name]", name)
    fill(ui, "[data-role=user-password]", "s3cret")
    fill(ui, "[data-role=user-password2]", "s3cret")
    fill(ui, "[data-role=user-tags]", "management")
    ui.click("[data-role=add-user-submit]")
    ui.wait(lambda: api.get(f"/api/users/{q(name)}").status == 200, message="user added")
    assert api.json(f"/api/users/{q(name)}")["tags"] in (["management"], "management")
    ui.one(f"[data-table=users] a[data-user='{name}']")
    ui.screenshot("users")
    # no permission yet: AMQP login to "/" is refused
    params = pika.ConnectionParameters("127.0.0.1", broker, "/", pika.PlainCredentials(name, "s3cret"), connection_attempts=1)
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(params).close()
    ui.click(f"[data-table=users] a[data-user='{name}']")
    ui.wait(lambda: "No permissions" in ui.text("[data-role=permissions]"), message="user page")
    choose(ui, "[data-role=perm-vhost]", "/")
    fill(ui, "[data-role=perm-configure]", "^ui-")
    ui.click("[data-role=set-permission-submit]")
    ui.wait(lambda: "^ui-" in ui.text("[data-role=permissions]"), message="permission shown")
    assert api.json(f"/api/permissions/%2F/{q(name)}")["configure"] == "^ui-"
    c = pika.BlockingConnection(params)
    try:
        mine = uniq("ui-perm")
        assert c.channel().queue_declare(mine, exclusive=True).method.queue == mine
        code, _ = channel_error(c, lambda chan: chan.queue_declare(uniq("other"), exclusive=True))
        assert code == 403  # outside ^ui-: the permission set from the UI is the one in force
    finally:
        c.close()


def test_policy_added_edited_and_deleted(ui, api):
    name = uniq("uipol")
    try:
        ui.login()
        ui.open("policies")
        fill(ui, "[data-role=policy-name]", name)
        fill(ui, "[data-role=policy-pattern]", "^ui-pol-")
        choose(ui, "[data-role=policy-apply-to]", "queues")
        fill(ui, "[data-role=policy-priority]", "3")
        fill(ui, "[data-role=policy] [data-role=arg-key]", "max-length")
        fill(ui, "[data-role=policy] [data-role=arg-value]", "10")
        choose(ui, "[data-role=policy] [data-role=arg-type]", "number")
        ui.click("[data-role=policy-submit]")
        ui.wait(lambda: api.get(f"/api/policies/%2F/{q(name)}").status == 200, message="policy added")
        p = api.json(f"/api/policies/%2F/{q(name)}")
        assert (p["pattern"], p["apply-to"], p["priority"], p["definition"]) == ("^ui-pol-", "queues", 3, {"max-length": 10})
        ui.one(f"[data-table=policies] [data-policy='{name}']")
        ui.screenshot("policies")
        # edit: the form is filled from the row; change the number and save
        ui.click(f"[data-table=policies] tr:has([data-policy='{name}']) [data-role=edit-policy]")
        ui.wait(lambda: ui.one("[data-role=policy-pattern]").get_attribute("value") == "^ui-pol-", message="form filled")
        fill(ui, "[data-role=policy] [data-role=arg-value]", "20")
        ui.click("[data-role=policy-submit]")
        ui.wait(lambda: api.json(f"/api/policies/%2F/{q(name)}")["definition"] == {"max-length": 20}, message="policy updated")
        # a bad definition: the API's reason in the banner
        fill(ui, "[data-role=policy] [data-role=arg-key]", "no-such-key")
        ui.click("[data-role=policy-submit]")
        ui.wait(lambda: ui.banner() != "", message="refusal shown")
        bad = api.put(f"/api/policies/%2F/{q(name)}", {"pattern": "^ui-pol-", "apply-to": "queues", "priority": 3, "definition": {"no-such-key": 20}})
        assert bad.status == 400 and squash(ui.banner()) == squash(bad.reason())
        ui.click(f"[data-table=policies] tr:has([data-policy='{name}']) [data-role=delete-policy]")
        confirm(ui)
        ui.wait(lambda: api.get(f"/api/policies/%2F/{q(name)}").status == 404, message="policy deleted")
    finally:
        api.delete(f"/api/policies/%2F/{q(name)}")


def test_export_and_import_definitions(ui, api, reg, amqp, tmp_path):  # noqa: F811
    kept, imported = reg.queue("uidefs"), reg.queue("uiimport")
    amqp().channel().queue_declare(kept, durable=True)
    downloads = tempfile.mkdtemp(prefix="ui-downloads-")
    ui.d.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": downloads})
    ui.login()
    ui.open("definitions")
    fill(ui, "[data-role=export-file-name]", "defs-test.json")
    ui.click("[data-role=export]")
    ui.one("[data-role=export-link]")
    # the file the browser saved (the page's CSP keeps its own scripts from reading the
    # Blob back: connect-src 'self')
    saved = os.path.join(downloads, "defs-test.json")
    deadline = time.monotonic() + 10
    while not (os.path.exists(saved) and os.path.getsize(saved) > 0):
        assert time.monotonic() < deadline, f"no download in {downloads}: {os.listdir(downloads)}"
        time.sleep(0.1)
    assert kept in [x["name"] for x in json.load(open(saved))["queues"]]

    f = tmp_path / "import.json"
    f.write_text(json.dumps({"queues": [{"name": imported, "vhost": "/", "durable": True, "auto_delete": False, "arguments": {}}]}))
    ui.one("[data-role=import-file]").send_keys(str(f))
    ui.click("[data-role=import-submit]")
    ui.wait(lambda: api.get(f"/api/queues/%2F/{q(imported)}").status == 200, message="imported queue")
    ui.wait(lambda: notice(ui) == "Definitions imported.", message="notice")

    # a file the API refuses: its reason, as it is
    bad_doc = {"queues": [{"name": "x", "vhost": "no-such-vhost-ui", "durable": True, "auto_delete": False, "arguments": {}}]}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(bad_doc))
    refused = api.post("/api/definitions", bad_doc)
    assert refused.status >= 400
    ui.one("[data-role=import-file]").send_keys(str(bad))
    ui.click("[data-role=import-submit]")
    ui.wait(lambda: ui.banner() != "", message="refusal shown")
    assert squash(ui.banner()) == squash(refused.reason())
    # not JSON at all: said before anything is sent
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    ui.one("[data-role=import-file]").send_keys(str(junk))
    ui.click("[data-role=import-submit]")
    ui.wait(lambda: ui.banner().startswith("junk.json is not JSON"), message="not JSON shown")


def test_monitoring_user_has_no_admin_pages_and_sees_refusals(ui, api, reg):
    user = reg.user("uimon2", password="pw", tags="monitoring", perms={"configure": "", "write": "", "read": ".*"})
    x = reg.exchange("uimonx")
    ui.login(user, "pw")
    nav = [a.text for a in ui.css("#nav a")]
    assert "Exchanges" in nav and "Connections" in nav
    for admin in ("Users", "Vhosts", "Permissions", "Limits", "Policies", "Op. policies", "Operator policies", "Definitions"):
        assert admin not in nav, nav
    ui.open("users")
    ui.wait(lambda: "This page is for users tagged administrator" in ui.text("#view"), message="users page refused")
    assert not ui.css("[data-table=users]")
    ui.open("exchanges")
    fill(ui, "[data-role=declare-name]", x)
    ui.click("[data-role=declare-exchange-submit]")
    ui.wait(lambda: ui.banner() != "", message="refusal shown")
    refused = api.as_user(user, "pw").put(f"/api/exchanges/%2F/{q(x)}", {"type": "direct", "durable": True, "auto_delete": False, "internal": False, "arguments": {}})
    assert refused.status in (401, 403)
    assert squash(ui.banner()) == squash(refused.reason())
    assert api.get(f"/api/exchanges/%2F/{q(x)}").status == 404


def test_vhost_page_sets_a_limit_and_the_channels_and_consumers_lists(ui, api, reg, amqp):  # noqa: F811
    v = reg.vhost("uivh")
    qn = reg.queue("uicons")
    ch = amqp().channel()
    ch.basic_qos(prefetch_count=7)
    ch.queue_declare(qn)
    tag = ch.basic_consume(qn, lambda *a: None)
    ui.login()
    ui.open("vhosts/" + enc(v))
    ui.wait(lambda: "No limits" in ui.text("[data-role=vhost-limits]"), message="vhost page")
    choose(ui, "[data-role=vhost-limit-name]", "max-queues")
    fill(ui, "[data-role=vhost-limit-value]", "5")
    ui.click("[data-role=set-vhost-limit-submit]")
    ui.wait(lambda: api.json(f"/api/vhost-limits/{q(v)}")[0]["value"].get("max-queues") == 5, message="limit set")
    ui.wait(lambda: "max-queues" in ui.text("[data-role=vhost-limits]"), message="limit shown")
    ui.open("consumers")
    fill(ui, "[data-table=consumers] [data-role=filter]", tag)
    ui.wait(lambda: any(qn in r and "manual ack" in r for r in rows(ui, "consumers")), message="consumer row")
    ui.open("channels")
    ui.wait(lambda: any("\t7\t" in r for r in rows(ui, "channels")), message="channel with prefetch 7")


def test_delayed_exchange_page_shows_waiting_messages(ui, api, reg, amqp):  # noqa: F811
    x = reg.exchange("uidelayed")
    api.ok("PUT", f"/api/exchanges/%2F/{q(x)}", {"type": "x-delayed-message", "durable": False,
                                                  "arguments": {"x-delayed-type": "direct"}})
    ch = amqp().channel()
    ch.basic_publish(x, "k", b"w", pika.BasicProperties(headers={"x-delay": 600_000}))
    eventually(lambda: api.json(f"/api/exchanges/%2F/{q(x)}")["messages_delayed"] == 1)
    ui.login()
    ui.open(f"exchanges/{enc('/', x)}")
    ui.wait(lambda: "Delayed messages" in ui.text("table.kv"), message="delayed row shown")
    text = squash(ui.text("table.kv"))
    assert "Delayed messages 1" in text, text
    assert "Next due none" not in text, text
