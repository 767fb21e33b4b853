"""Paging, sorting, filtering and columns of the management API's lists (`page`,
`page_size`, `name`, `use_regex`, `sort`, `sort_reverse`, `columns`), as RabbitMQ 3.10
answers them: the page object, the order, the counts and the error texts.

Written against RabbitMQ 3.10; every test here passes there too:
    BROKER_CLI_TEST_URL=http://127.0.0.1:15673 AMQP_TEST_PORT=5673 pytest test_http_paging.py
Each test works in a vhost of its own, so the totals are its own."""
import pytest

from httpapi import amqp, api, eventually, q, reg  # noqa: F401

NAMES = ["pg-B", "pg-E", "pg-a", "pg-c", "pg-d"]


@pytest.fixture
def vh(api, reg):
    """A vhost with the queues NAMES and one more ('other'), in no particular order."""
    v = reg.vhost("paging")
    for n in ["pg-d", "other", "pg-a", "pg-E", "pg-c", "pg-B"]:
        api.ok("PUT", f"/api/queues/{q(v)}/{n}", {"durable": False}, expect=(201,))
    return v


def names(items):
    return [i["name"] for i in items]


def test_a_page_of_queues_filtered_by_name(api, vh):
    page = api.json(f"/api/queues/{q(vh)}?page=1&page_size=2&name=pg-")
    assert {k: v for k, v in page.items() if k != "items"} == {
        "filtered_count": 5, "item_count": 2, "page": 1, "page_count": 3, "page_size": 2, "total_count": 6}
    # by name, byte order (upper case first), as RabbitMQ sorts
    assert names(page["items"]) == ["pg-B", "pg-E"]
    assert page["items"][0]["vhost"] == vh and page["items"][0]["durable"] is False
    last = api.json(f"/api/queues/{q(vh)}?page=3&page_size=2&name=pg-")
    assert names(last["items"]) == ["pg-d"] and last["item_count"] == 1
    # the whole list across vhosts, filtered down to this test's names
    everywhere = api.json(f"/api/queues?page=1&page_size=500&name=pg-&columns=name,vhost")
    assert [i["name"] for i in everywhere["items"] if i["vhost"] == vh] == NAMES


def test_page_past_the_last_and_bad_parameters_are_refused(api, vh):
    r = api.get(f"/api/queues/{q(vh)}?page=4&page_size=2&name=pg-")
    assert r.status == 400
    assert r.json() == {"error": "page_out_of_range", "reason": "Page out of range, page: 4 page size: 2, len: 5"}
    r = api.get(f"/api/queues/{q(vh)}?page=2&page_size=2&name=nomatch")
    assert r.status == 400 and r.reason() == "Page out of range, page: 2 page size: 2, len: 0"
    empty = api.json(f"/api/queues/{q(vh)}?page=1&page_size=2&name=nomatch")
    assert empty == {"filtered_count": 0, "item_count": 0, "items": [], "page": 1, "page_count": 0,
                     "page_size": 2, "total_count": 6}
    for query, reason in [
        ("page=0", "Invalid pagination parameters: page number 0, page size undefined"),
        ("page=-1", "Invalid pagination parameters: page number -1, page size undefined"),
        ("page=1&page_size=501", "Invalid pagination parameters: page number 1, page size 501"),
        ("page=1&page_size=0", "Invalid pagination parameters: page number 1, page size 0"),
    ]:
        r = api.get(f"/api/queues/{q(vh)}?{query}")
        assert r.status == 400, (query, r)
        assert r.json() == {"error": "invalid_pagination_parameters", "reason": reason}, query
    for query in ["page=x", "page=2.5", "page=1&page_size=abc", "page=1&name=pg-%5B&use_regex=true"]:
        r = api.get(f"/api/queues/{q(vh)}?{query}")
        assert r.status == 400, (query, r)
        assert r.json() == {"error": "bad_request", "reason": "Pagination parameters are invalid"}, query


def test_without_page_the_answer_stays_a_sorted_list(api, vh):
    plain = api.json(f"/api/queues/{q(vh)}?sort=name&sort_reverse=true&columns=name")
    assert isinstance(plain, list)
    assert names(plain) == sorted(NAMES + ["other"], reverse=True)
    # page_size alone does not page
    assert len(api.json(f"/api/queues/{q(vh)}?page_size=2")) == 6


@pytest.mark.ours_only
def test_without_page_the_name_filter_applies_too(api, vh):
    """RabbitMQ 3.10 ignores `name` without `page` (and answers every queue); ours
    filters the plain list too, as the UI's contract says."""
    plain = api.json(f"/api/queues/{q(vh)}?name=PG-&sort=name&sort_reverse=true")
    assert names(plain) == list(reversed(NAMES))
    plain = api.json(f"/api/queues/{q(vh)}?name=pg-a&columns=name,arguments,no_such_field")
    assert plain == [{"name": "pg-a", "arguments": {}}]


def test_regex_filter_is_case_insensitive(api, vh):
    page = api.json(f"/api/queues/{q(vh)}?page=1&name=%5EPG-%5Ba-c%5D&use_regex=true")
    assert names(page["items"]) == ["pg-B", "pg-a", "pg-c"]
    # use_regex other than "true": a plain substring, which '^pg' is not
    page = api.json(f"/api/queues/{q(vh)}?page=1&name=%5Epg&use_regex=yes")
    assert page["filtered_count"] == 0


def test_columns_keep_only_the_named_fields(api, vh):
    page = api.json(f"/api/queues/{q(vh)}?page=1&page_size=2&name=pg&columns=name,vhost")
    assert page["items"] == [{"name": "pg-B", "vhost": vh}, {"name": "pg-E", "vhost": vh}]
    page = api.json(f"/api/queues/{q(vh)}?page=1&name=pg-a&columns=name,arguments,no_such_field")
    assert page["items"] == [{"name": "pg-a", "arguments": {}}]


def test_sort_by_a_count_field(api, vh, amqp):
    c = amqp(vhost=vh)
    ch = c.channel()
    for n, count in [("pg-c", 3), ("pg-a", 1), ("pg-E", 2)]:
        for _ in range(count):
            ch.basic_publish("", n, b"m")

    def sorted_by_messages():
        page = api.json(f"/api/queues/{q(vh)}?page=1&page_size=3&name=pg-&sort=messages&sort_reverse=true"
                        "&columns=name,messages")
        assert page["items"] == [{"name": "pg-c", "messages": 3}, {"name": "pg-E", "messages": 2},
                                 {"name": "pg-a", "messages": 1}]
        return page

    page = eventually(sorted_by_messages, conns=[c])
    assert page["filtered_count"] == 5 and page["page_count"] == 2
    # ascending: the empty ones first, in name order
    page = api.json(f"/api/queues/{q(vh)}?page=1&page_size=5&name=pg-&sort=messages&columns=name")
    assert names(page["items"]) == ["pg-B", "pg-d", "pg-a", "pg-E", "pg-c"]
    # a field no queue has sorts nothing: name order stays
    page = api.json(f"/api/queues/{q(vh)}?page=1&page_size=3&name=pg&sort=nonexistent.field&columns=name")
    assert names(page["items"]) == ["pg-B", "pg-E", "pg-a"]


def test_exchanges_page(api, reg):
    v = reg.vhost("paging")
    everything = api.json(f"/api/exchanges/{q(v)}?columns=name")
    page = api.json(f"/api/exchanges/{q(v)}?page=1&page_size=3&columns=name")
    # the default exchange first, then by name (ours also has amq.dead-letter)
    assert page["items"] == sorted(everything, key=lambda x: x["name"])[:3]
    assert page["items"][0] == {"name": ""} and page["items"][1]["name"].startswith("amq.d")
    total = page["total_count"]
    assert total == len(everything)
    assert page["filtered_count"] == total and page["page_count"] == -(-total // 3)
    topic = api.json(f"/api/exchanges/{q(v)}?page=1&page_size=3&name=amq.t")
    assert names(topic["items"]) == ["amq.topic"] and topic["items"][0]["type"] == "topic"
    by_type = api.json(f"/api/exchanges/{q(v)}?page=1&page_size=2&sort=type&columns=name,type")
    assert by_type["items"] == [{"name": "", "type": "direct"}, {"name": "amq.direct", "type": "direct"}]
    r = api.get(f"/api/exchanges?page=1&page_size=501")
    assert r.status == 400 and r.json()["error"] == "invalid_pagination_parameters"


def test_connections_and_channels_pages(api, amqp, broker):
    from conftest import uniq
    label = uniq("paged-conn")
    c = amqp(name=label)
    c.channel()

    def listed():
        page = api.json("/api/connections?page=1&page_size=500&columns=name,user_provided_name")
        assert any(i.get("user_provided_name") == label for i in page["items"])
        return page

    page = eventually(listed, conns=[c])
    assert set(page) == {"filtered_count", "item_count", "items", "page", "page_count", "page_size",
                         "total_count"}
    assert all(set(i) <= {"name", "user_provided_name"} for i in page["items"])
    mine = next(i["name"] for i in page["items"] if i.get("user_provided_name") == label)
    port = mine.split(" -> ")[0].rsplit(":", 1)[1]
    one = api.json(f"/api/connections?page=1&name=%3A{port}%20-%3E&columns=name")
    assert one["items"] == [{"name": mine}] and one["filtered_count"] == 1

    def channel_listed():
        page = api.json(f"/api/channels?page=1&name=%3A{port}%20-%3E&columns=name,number")
        assert page["items"] == [{"name": f"{mine} (1)", "number": 1}]

    eventually(channel_listed, conns=[c])


@pytest.mark.ours_only
def test_hostile_regexes_cost_nothing(api, vh):
    """Rust's regex crate matches in linear time (no catastrophic backtracking) and its
    compiled size is bounded: a pattern that would compile huge is refused."""
    import time
    t = time.monotonic()
    page = api.json(f"/api/queues/{q(vh)}?page=1&name=%5E(a%2B)%2B%24&use_regex=true")
    assert page["filtered_count"] == 0
    r = api.get(f"/api/queues/{q(vh)}?page=1&name=(a%7B1000%7D)%7B1000%7D&use_regex=true")
    assert r.status == 400 and r.reason() == "Pagination parameters are invalid"
    r = api.get(f"/api/queues/{q(vh)}?page=1&name={'a' * 2000}")
    assert r.status == 400
    assert time.monotonic() - t < 5
