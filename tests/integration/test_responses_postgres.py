"""The Responses store on a real PostgreSQL (Debian's, started by the session's ``postgres`` fixture; a database of
its own per test): the Responses routes through the ``openai`` SDK in the memory tier with ``responses.store_url`` —
store, retrieve, continue, delete, ownership, a restart, two instances on one database — and the store service itself
on adbapi's real thread pool: the schema, pruning by age and count under the advisory lock (two stores prune once),
the reasoning table, and a URL's password kept out of the log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import openai
import psycopg
import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher

from llamashim import preflight
from llamashim.chat.reasoning_memory import ReasoningMemory
from llamashim.dialects.responses.store import ResponseStore, Stored
from llamashim.upstream.supervisor import free_port
from tests.integration.postgres import Postgres
from tests.integration.support import ShimFixture, reactor, timeout

JSON = dict[str, Any]
KEY_A, KEY_B = "sk-alpha-0001", "sk-bravo-0002"
TURNS = [{"role": "user", "content": "Hi"}]
DAY = 86400.0


def response(n: int) -> JSON:
    return {"id": f"resp_{n}", "object": "response", "output": []}


def sql(url: str, query: str, *args: Any) -> list[Any]:
    """Run one statement on its own connection (committed), as another client of the database would."""
    with psycopg.connect(url, autocommit=True) as db:
        cursor = db.execute(query, args)
        return cursor.fetchall() if cursor.description else []


def chat_messages(env: Any) -> list[JSON]:
    messages: list[JSON] = env.fake.chat_requests()[-1].body["messages"]
    return messages


# -- the routes, in memory, on PostgreSQL ----------------------------------------------------------------------------


def on_postgres(shims: ShimFixture, url: str, **settings: Any) -> Any:
    """A memory shim whose Responses store is ``url`` (its store_path is set too: the URL wins)."""
    return shims.start(settings={"responses": {"store_url": url}, **settings})


def test_store_retrieve_continue_and_delete(shims: ShimFixture, pg_url: str) -> None:
    """With store_url, a response is kept in PostgreSQL (not in the SQLite file), retrieved, continued by
    previous_response_id with its stored conversation, listed and deleted; afterwards all are 404s."""
    env = on_postgres(shims, pg_url)
    client = env.openai()
    first = client.responses.create(model="m", input="My name is Ann.")
    assert sql(pg_url, "SELECT id FROM responses") == [(first.id,)]
    got = client.responses.retrieve(first.id)
    assert got.id == first.id and got.output_text == "Hello, world!"
    env.fake.content = ["Hi", " Ann."]
    second = client.responses.create(model="m", input="What is my name?", previous_response_id=first.id)
    assert [m["content"] for m in chat_messages(env)] == ["My name is Ann.", "Hello, world!", "What is my name?"]
    with client.responses.stream(model="m", input="Thanks.", previous_response_id=second.id) as stream:
        third = stream.get_final_response()
    assert [m["content"] for m in chat_messages(env)][-2:] == ["Hi Ann.", "Thanks."]
    assert [i.id for i in client.responses.input_items.list(third.id).data]
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError) as raised:
        client.responses.create(model="m", input="?", previous_response_id=first.id)
    assert raised.value.code == "previous_response_not_found"
    assert sorted(r[0] for r in sql(pg_url, "SELECT id FROM responses")) == sorted([second.id, third.id])
    assert not Path(env.store_path).exists()


def test_another_key_gets_404(shims: ShimFixture, pg_url: str) -> None:
    """With two API keys, B gets a 404 for A's response (retrieve, input items, delete, continue); A still has it."""
    env = on_postgres(shims, pg_url, auth={"api_keys": [KEY_A, KEY_B]})
    a, b = env.openai(KEY_A), env.openai(KEY_B)
    r = a.responses.create(model="m", input="Secret.")
    with pytest.raises(openai.NotFoundError):
        b.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        b.responses.input_items.list(r.id)
    with pytest.raises(openai.NotFoundError):
        b.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        b.responses.create(model="m", input="?", previous_response_id=r.id)
    assert a.responses.retrieve(r.id).id == r.id
    [(owner,)] = sql(pg_url, "SELECT owner FROM responses")
    assert KEY_A not in owner  # a hash of the key, never the key


def test_a_restart_still_finds_the_response(shims: ShimFixture, pg_url: str) -> None:
    """A response stored before the service stops is retrieved and continued by the next service on the database."""
    env = on_postgres(shims, pg_url)
    r = env.openai().responses.create(model="m", input="Remember me.")
    env.restart()
    client = env.openai()
    assert client.responses.retrieve(r.id).output_text == "Hello, world!"
    client.responses.create(model="m", input="Still there?", previous_response_id=r.id)
    assert chat_messages(env)[0] == {"role": "user", "content": "Remember me."}


def test_two_instances_share_one_database(shims: ShimFixture, pg_url: str) -> None:
    """Two llamashim instances on one database (as behind a balancer): a response made through one is retrieved,
    continued and deleted through the other, for its key only."""
    one = on_postgres(shims, pg_url, auth={"api_keys": [KEY_A, KEY_B]})
    two = on_postgres(shims, pg_url, auth={"api_keys": [KEY_A, KEY_B]})
    r = one.openai(KEY_A).responses.create(model="m", input="I am on one.")
    assert two.openai(KEY_A).responses.retrieve(r.id).id == r.id
    with pytest.raises(openai.NotFoundError):
        two.openai(KEY_B).responses.retrieve(r.id)
    follow = two.openai(KEY_A).responses.create(model="m", input="And now?", previous_response_id=r.id)
    assert chat_messages(two)[0] == {"role": "user", "content": "I am on one."}
    assert one.openai(KEY_A).responses.retrieve(follow.id).previous_response_id == r.id
    two.openai(KEY_A).responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        one.openai(KEY_A).responses.retrieve(r.id)


# -- the store service on adbapi's thread pool -----------------------------------------------------------------------


@pytest.fixture
def stores(pg_url: str) -> Iterator[list[ResponseStore]]:
    """Started stores on the test's database, stopped at the end (``started`` adds one)."""
    running: list[ResponseStore] = []
    yield running
    for store in running:
        if store.running:
            store.stopService()


def started(stores: list[ResponseStore], url: str, max_age: float = DAY, max_items: int = 100) -> ResponseStore:
    store = ResponseStore(reactor, "/nonexistent/unused.sqlite3", max_age, max_items, url)
    store.startService()
    stores.append(store)
    return store


async def get(store: ResponseStore, owner: str, response_id: str) -> Stored | None:
    """Read (behind everything asked of the store's one connection before: its schema, its start-up prune)."""
    return await timeout(Deferred.fromCoroutine(store.get(owner, response_id)))


async def prune(store: ResponseStore) -> int | None:
    return await timeout(Deferred.fromCoroutine(store.prune()))


@pytest_twisted.ensureDeferred
async def test_schema_on_start_and_types(stores: list[ResponseStore], pg_url: str) -> None:
    """Each store creates the schema when it starts (a second one on the same database too); times are float8, the
    documents bytea, and a response reads back as it was written."""
    first, second = started(stores, pg_url), started(stores, pg_url)
    await get(second, "x", "resp_none")
    columns = dict(sql(pg_url, "SELECT column_name, data_type FROM information_schema.columns "
                               "WHERE table_name IN ('responses', 'reasoning')"))
    assert (columns["created"], columns["at"], columns["response"]) == ("double precision", "double precision", "bytea")
    await timeout(first.put("alice", response(1), ["Hi"], TURNS))
    await timeout(first.put("alice", {**response(1), "status": "completed"}, ["Hi"], TURNS))  # the upsert
    assert await get(second, "alice", "resp_1") == Stored({**response(1), "status": "completed"}, ["Hi"], TURNS)
    assert await get(second, "bob", "resp_1") is None


@pytest_twisted.ensureDeferred
async def test_pruning_by_age_and_count(stores: list[ResponseStore], pg_url: str) -> None:
    """prune drops responses (and kept reasoning) older than max_age, then all but the newest max_items."""
    store = started(stores, pg_url, max_age=DAY, max_items=2)
    now = reactor.seconds()
    for n in range(5):
        await timeout(store.put("alice", response(n), [], TURNS))
    for n, age in enumerate([3 * DAY, 2 * DAY, 300.0, 200.0, 100.0]):
        sql(pg_url, "UPDATE responses SET created = %s WHERE id = %s", now - age, f"resp_{n}")
    store.save_reasoning("alice", ["id:old"], "old thoughts", now - 2 * DAY)
    store.save_reasoning("alice", ["id:new"], "new thoughts", now)
    assert await prune(store) == 3  # two by age, one by count
    assert sorted(r[0] for r in sql(pg_url, "SELECT id FROM responses")) == ["resp_3", "resp_4"]
    assert sql(pg_url, "SELECT reasoning FROM reasoning") == [("new thoughts",)]
    assert await prune(store) == 0


async def until(condition: Any, seconds: float = 10.0) -> None:
    """Wait (turning the reactor) until ``condition()`` holds — another process's state, seen in the database."""
    deadline = reactor.seconds() + seconds
    while not condition():
        assert reactor.seconds() < deadline, "timed out"
        await deferLater(reactor, 0.02, lambda: None)


@pytest_twisted.ensureDeferred
async def test_two_stores_prune_once(stores: list[ResponseStore], pg_url: str) -> None:
    """Two stores on one database: while one prunes (held up here by a row lock another client holds), the other's
    prune skips at once (None) instead of pruning too; the first then prunes everything due."""
    a, b = started(stores, pg_url, max_age=DAY), started(stores, pg_url, max_age=DAY)
    for n in range(3):
        await timeout(a.put("alice", response(n), [], TURNS))
    await get(b, "x", "resp_none")  # b's start-up prune is over
    sql(pg_url, "UPDATE responses SET created = 0")
    with psycopg.connect(pg_url) as blocker:
        blocker.execute("SELECT id FROM responses WHERE id = 'resp_1' FOR UPDATE")  # a's DELETE will wait for it
        a_pruned = Deferred.fromCoroutine(a.prune())
        await until(lambda: sql(pg_url, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                        "AND application_name = 'llamashim'") == [(1,)])  # a is pruning
        assert await prune(b) is None  # a holds the lock: b leaves the round to a
        assert not a_pruned.called
        blocker.rollback()
    assert await timeout(a_pruned) == 3
    assert sql(pg_url, "SELECT count(*) FROM responses") == [(0,)]
    assert await prune(b) == 0  # the lock went with a's transaction


@pytest_twisted.ensureDeferred
async def test_reasoning_round_trip(stores: list[ResponseStore], pg_url: str) -> None:
    """Reasoning kept by thinking.replay is written to PostgreSQL and taken back by the next store (a restart, or
    another instance), into the memory that attaches to it."""
    first = started(stores, pg_url)
    now = reactor.seconds()
    first.save_reasoning("alice", ["id:call_1"], "I should look it up.", now)
    await get(first, "x", "resp_none")  # after the write, on the one connection
    second = started(stores, pg_url)
    rows = await timeout(second.load_reasoning())
    assert rows == [("alice", ["id:call_1"], "I should look it up.", now)]
    memory = ReasoningMemory(reactor)
    memory.attach(second)
    await get(second, "x", "resp_none")
    await deferLater(reactor, 0, lambda: None)  # (the rows reach the memory in a callback of that read's chain)
    assert memory.recall("alice", [{"id": "call_1", "function": {"name": "f", "arguments": "{}"}}]) == (
        "I should look it up.")
    assert memory.recall("bob", [{"id": "call_1"}]) is None


@pytest_twisted.ensureDeferred
async def test_the_store_reconnects_after_the_database_restarts(stores: list[ResponseStore], postgres: Postgres,
                                                                pg_url: str) -> None:
    """A PostgreSQL restart ends the store's connection: at most the one query that finds it gone fails, and adbapi
    opens a new one for the next (nothing else is lost: the rows are in the database)."""
    store = started(stores, pg_url)
    await timeout(store.put("alice", response(1), [], TURNS))
    postgres.restart()
    try:
        found = await get(store, "alice", "resp_1")
    except psycopg.OperationalError:  # the query that found the connection gone (whether it does depends on timing)
        found = await get(store, "alice", "resp_1")
    assert found == Stored(response(1), [], TURNS)


# -- the password ----------------------------------------------------------------------------------------------------


@pytest.fixture
def logged() -> Iterator[list[JSON]]:
    events: list[JSON] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    yield events
    globalLogPublisher.removeObserver(observer)


def everything_said(events: list[JSON]) -> str:
    """Every logged event as text, with its fields and any failure's traceback."""
    parts = []
    for event in events:
        parts.append(formatEvent(event))
        parts.append(repr({k: v for k, v in event.items() if k not in ("log_logger", "log_source", "log_failure")}))
        if event.get("log_failure") is not None:
            parts.append(event["log_failure"].getTraceback())
    return "\n".join(parts)


@pytest_twisted.ensureDeferred
async def test_the_password_is_never_logged(stores: list[ResponseStore], postgres: Postgres, pg_url: str,
                                            logged: list[JSON]) -> None:
    """A store_url's password appears in no log event: not on start, nor when a database cannot be reached (that
    failure is logged, naming the URL without the password)."""
    database = pg_url.rsplit("/", 1)[1]
    good = started(stores, postgres.url(database, password="s3cret-pw"))
    await timeout(good.put("alice", response(1), [], TURNS))
    closed = f"postgresql://postgres:s3cret-pw@127.0.0.1:{free_port()}/{database}"
    bad = started(stores, closed)
    with pytest.raises(psycopg.OperationalError):
        await get(bad, "alice", "resp_1")
    text = everything_said(logged)
    assert f"responses store: postgresql://postgres@127.0.0.1:{postgres.port}/{database}" in text
    assert "responses store: could not set up postgresql://postgres@127.0.0.1:" in text
    assert "s3cret-pw" not in text


def test_start_up_check(postgres: Postgres, pg_url: str) -> None:
    """Before listening, the daemon checks that the database answers: a live one passes; a database that does not
    exist is one line naming it, without the password."""
    preflight.check_store(pg_url)
    with pytest.raises(preflight.StartupError) as raised:
        preflight.check_store(postgres.url("no_such_db", password="s3cret-pw"))
    assert str(raised.value).startswith(f"responses.store_url postgresql://postgres@127.0.0.1:{postgres.port}/"
                                        "no_such_db: connection failed: ")
    assert 'database "no_such_db" does not exist' in str(raised.value) and "s3cret-pw" not in str(raised.value)
