"""What keeps another site's page from using a browser against the management API
(issue 17): a state-changing call must declare a JSON body (a cross-site form or
`no-cors` fetch cannot, and a JSON content type needs a CORS preflight the API never
grants), and a 401 answered to the UI's scripts never makes the browser show its own
login dialog, which would cache the credentials for such requests.

RabbitMQ 3.10 accepts any content type, so the refusals are `ours_only`."""
import pytest

from httpapi import Api, api, q, reg  # noqa: F401

pytestmark = pytest.mark.ours_only


def queue_exists(api, name):
    return api.get(f"/api/queues/%2F/{q(name)}").status == 200


@pytest.mark.parametrize("content_type", [
    "application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x"])
def test_a_put_with_a_form_or_text_body_is_refused_415_and_creates_nothing(api, reg, content_type):
    name = reg.queue("csrf")
    r = api.call("PUT", f"/api/queues/%2F/{q(name)}", raw=b'{"durable":true}',
                 headers={"content-type": content_type})
    assert r.status == 415, r
    body = r.json()
    assert body["error"] == "unsupported_media_type"
    assert "application/json" in body["reason"] and content_type.split(";")[0] in body["reason"]
    assert not queue_exists(api, name)


def direct_keys(api, name):
    """The routing keys binding the queue to amq.direct."""
    return [b["routing_key"] for b in api.get(f"/api/queues/%2F/{q(name)}/bindings").json()
            if b["source"] == "amq.direct"]


def test_a_post_needs_a_json_content_type_even_without_a_body(api, reg):
    """An empty POST would bind with an empty routing key: a no-cors fetch could send one."""
    name = reg.queue("csrf", body={})
    path = f"/api/bindings/%2F/e/amq.direct/q/{q(name)}"
    r = api.call("POST", path)
    assert r.status == 415, r
    assert "got none" in r.json()["reason"]
    r = api.call("POST", path, raw=b"routing_key=k", headers={"content-type": "text/plain"})
    assert r.status == 415, r
    assert direct_keys(api, name) == []
    r = api.call("POST", path, raw=b'{"routing_key":"k"}',
                 headers={"content-type": "application/json; charset=utf-8"})
    assert r.status == 201, r
    assert direct_keys(api, name) == ["k"]


def test_calls_without_a_body_need_no_content_type(api, reg):
    """PUT and DELETE are never sent cross-site without a preflight; tools send them bare."""
    vhost = reg.vhost("csrf")
    r = api.call("PUT", f"/api/vhosts/{q(vhost)}")
    assert r.status in (201, 204), r
    name = reg.queue("csrf", body={})
    r = api.call("DELETE", f"/api/queues/%2F/{q(name)}")
    assert r.status == 204, r
    assert not queue_exists(api, name)


def test_the_uis_scripts_get_no_login_prompt_on_401(http_url):
    stranger = Api(http_url, "nobody", "wrong")
    plain = stranger.get("/api/overview")
    assert plain.status == 401
    assert plain.headers.get("www-authenticate", "").startswith("Basic")
    scripted = stranger.get("/api/overview", headers={"x-requested-with": "XMLHttpRequest"})
    assert scripted.status == 401
    assert scripted.headers.get("www-authenticate") is None
    assert scripted.json()["error"] == "not_authorized"
    assert scripted.headers.get("x-content-type-options") == "nosniff"
