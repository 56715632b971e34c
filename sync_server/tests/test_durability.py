"""Nothing a client could have seen is lost: updates are stored before they are
relayed, wait out a PostgreSQL outage, and survive compaction."""

import asyncio
import signal
import uuid

import psycopg
import pytest
from pycrdt import Doc, Text, create_update_message

from conftest import YClient, eventually, stored_text
from rtmx_sync import crashpoints
from rtmx_sync.config import Settings
from rtmx_sync.store import UpdateStore


def room() -> str:
    return f"durable-{uuid.uuid4().hex[:8]}"


def run(coro):
    return asyncio.run(coro)


def stored_rows(dsn: str, name: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM rtmx_sync_updates WHERE room = %s", (name,)).fetchone()[0]


def edit(doc: Doc, text: Text, chunk: str) -> bytes:
    state = doc.get_state()
    text += chunk
    return doc.get_update(state)


def test_relayed_updates_are_already_stored(servers, postgres_dsn):
    server = servers("sync-a")
    name = room()

    async def scenario():
        a = await YClient(server.url, name).connect()
        b = await YClient(server.url, name).connect()
        for i in range(15):
            await a.insert(f"a{i};")
            await eventually(lambda i=i: f"a{i};" in str(b.text), what=f"update {i} relayed")
            # B has it, so PostgreSQL must have it already.
            assert f"a{i};" in stored_text(postgres_dsn, name)
        await a.close()
        await b.close()

    run(scenario())


def test_sigkill_loses_nothing_acknowledged(servers, postgres_dsn):
    one, two = servers("sync-a"), servers("sync-b")
    name = room()

    async def scenario():
        a = await YClient(one.url, name).connect()
        b = await YClient(one.url, name).connect()
        for i in range(30):
            await a.insert(f"a{i};")
        await eventually(lambda: str(b.text).count(";") == 30, what="B to see A's edits")
        seen_by_b = str(b.text)
        # More edits, then the server dies before it may have stored them.
        for i in range(30, 40):
            await a.insert(f"a{i};")
        one.kill()
        # What another client saw was stored before it was relayed.
        assert seen_by_b in stored_text(postgres_dsn, name)
        await eventually(lambda: a.closed is not None and b.closed is not None, what="clients to notice")
        await a.connect(two.url)
        await b.connect(two.url)
        fresh = await YClient(two.url, name).connect()
        expected = str(a.text)
        assert expected.count(";") == 40
        await eventually(lambda: str(fresh.text) == str(b.text) == expected, what="every edit at a fresh client")
        await eventually(lambda: stored_text(postgres_dsn, name).count(";") == 40, what="every edit stored")
        for client in (a, b, fresh):
            await client.close()

    run(scenario())


def test_postgres_outage_holds_updates_until_it_returns(servers, own_postgres):
    # Keepalive pings every 0.5 s, dropped after 1 s: the outage outlasts them, the clients must not.
    server = servers(
        "sync-a",
        postgres_dsn=own_postgres.dsn,
        RTMX_SYNC_SERVER_PING_INTERVAL_S="0.5",
        RTMX_SYNC_SERVER_PING_TIMEOUT_S="1",
    )
    name = room()

    async def scenario():
        a = await YClient(server.url, name).connect()
        b = await YClient(server.url, name).connect()
        await a.insert("before;")
        await eventually(lambda: "before;" in str(b.text), what="first edit relayed")
        own_postgres.stop()
        for i in range(5):
            await a.insert(f"during{i};")
        await eventually(lambda: server.health_report()[1]["pending_writes"] >= 1, what="a write waiting")
        await eventually(
            lambda: server.health_report()[1]["checks"]["postgres"].startswith("error"), what="postgres reported down"
        )
        assert server.health_report()[0] == 200
        # Not stored, so not relayed: B sees nothing of it while PostgreSQL is down, and both stay connected
        # (A's receive loop keeps reading, so its pongs are seen, while its update waits).
        await asyncio.sleep(3)
        await a.insert("more;")
        assert "during" not in str(b.text)
        assert a.closed is None and b.closed is None
        own_postgres.start()
        await eventually(
            lambda: str(b.text).count("during") == 5 and "more;" in str(b.text), within=30, what="edits relayed after"
        )
        assert str(a.text) == str(b.text)
        assert a.closed is None and b.closed is None
        await eventually(lambda: server.health_report()[1]["pending_writes"] == 0, what="buffer flushed")
        assert stored_text(own_postgres.dsn, name) == str(a.text)
        await a.close()
        await b.close()

    run(scenario())


def store_settings(dsn: str, **overrides) -> Settings:
    return Settings(postgres_dsn=dsn, redis_url="redis://unused", server_id="unit", io_timeout_s=2.0, **overrides)


def test_appends_are_batched_and_wait_for_space_while_postgres_is_down(own_postgres):
    async def scenario():
        store = UpdateStore(store_settings(own_postgres.dsn, write_buffer_max=3))
        await store.start()
        doc = Doc()
        text = doc.get("text", type=Text)
        updates = [edit(doc, text, f"{i};") for i in range(200)]
        ids = await asyncio.gather(*(store.append("batched", update) for update in updates))
        assert ids == sorted(ids) and len(set(ids)) == 200
        # Several updates per round trip; each update's append-to-commit time is observed.
        assert store.metrics.value("rtmx_sync_write_batch_size_count") < 100
        assert store.metrics.value("rtmx_sync_write_batch_size_sum") == 200
        assert store.metrics.value("rtmx_sync_update_store_seconds_count") == 200

        own_postgres.stop()
        appends = [asyncio.create_task(store.append("outage", update)) for update in updates[:5]]
        await eventually(lambda: store.metrics.value("rtmx_sync_store_errors_total") >= 1, what="a failed write")
        assert store.metrics.value("rtmx_sync_errors_total", kind="store") >= 1
        # Three wait in the buffer, two wait for space; none is lost or dropped.
        assert store.pending == 3 and not any(task.done() for task in appends)
        own_postgres.start()
        outage_ids = await asyncio.wait_for(asyncio.gather(*appends), 30)
        assert outage_ids == sorted(outage_ids) and store.pending == 0
        rows = await store.load("outage")
        assert [row_id for row_id, _ in rows] == outage_ids
        await store.close()

    run(scenario())


def test_compaction_deletes_exactly_what_it_merged(postgres_dsn):
    name = room()

    async def scenario():
        store = UpdateStore(store_settings(postgres_dsn))
        await store.start()
        doc = Doc()
        text = doc.get("text", type=Text)
        for i in range(20):
            await store.append(name, edit(doc, text, f"{i};"))
        # Another writer's row gets an id below the next ones but commits only after the compaction read.
        late_doc = Doc()
        late_update = edit(late_doc, late_doc.get("text", type=Text), "late;")
        late = await psycopg.AsyncConnection.connect(postgres_dsn)
        late_id = (
            await (
                await late.execute(
                    "INSERT INTO rtmx_sync_updates (room, update, server) VALUES (%s, %s, 'late') RETURNING id",
                    (name, late_update),
                )
            ).fetchone()
        )[0]
        for i in range(20, 30):
            await store.append(name, edit(doc, text, f"{i};"))

        # Writes go on while the room is compacted.
        async def keep_writing():
            for i in range(30, 60):
                await store.append(name, edit(doc, text, f"{i};"))

        writer = asyncio.create_task(keep_writing())
        result = await store.compact(name, 10)
        await writer
        await late.commit()
        await late.close()
        assert result is not None and result.merged_id is not None and result.merged_id > late_id
        ids = [row_id for row_id, _ in await store.load(name)]
        assert late_id in ids and result.merged_id in ids
        final = stored_text(postgres_dsn, name)
        assert sorted(final.split(";")[:-1]) == sorted([str(i) for i in range(60)] + ["late"])
        # Compacting again merges the late row too.
        again = await store.compact(name, 2)
        assert again.rows == 1 and stored_text(postgres_dsn, name) == final
        await store.close()

    run(scenario())


def test_rooms_converge_across_compactions(servers, postgres_dsn):
    # Both servers compact the same room while clients on each keep editing.
    one = servers("sync-a", RTMX_SYNC_SYNC_COMPACTION_THRESHOLD="10")
    two = servers("sync-b", RTMX_SYNC_SYNC_COMPACTION_THRESHOLD="10")
    name = room()

    async def scenario():
        a = await YClient(one.url, name).connect()
        b = await YClient(two.url, name).connect()
        for i in range(60):
            await (a if i % 2 else b).insert(f"{i};")
            await asyncio.sleep(0.02)
        await eventually(lambda: stored_rows(postgres_dsn, name) < 10, within=30, what="compaction")
        await eventually(lambda: str(a.text) == str(b.text) and str(a.text).count(";") == 60)
        assert stored_text(postgres_dsn, name) == str(a.text)
        fresh = await YClient(one.url, name).connect()
        await eventually(lambda: str(fresh.text) == str(a.text), what="a fresh client after compaction")
        for client in (a, b, fresh):
            await client.close()

    run(scenario())


def test_a_reconnect_that_brings_nothing_new_stores_nothing(servers, postgres_dsn):
    """Every sync step 2 carries the client's whole delete set: stored and relayed only when it changes something."""
    server = servers("sync-a")
    name = room()

    async def scenario():
        a = await YClient(server.url, name).connect()
        await a.insert("hello world;")
        del a.text[0:6]
        await a.ws.send(create_update_message(a.doc.get_update()))
        await eventually(lambda: stored_rows(postgres_dsn, name) >= 2, what="the edits stored")
        rows = stored_rows(postgres_dsn, name)
        for _ in range(3):  # reconnects: each sends its sync step 2 (delete set included)
            await a.close()
            await a.connect()
            await eventually(lambda: a.synced.is_set(), what="resynced")
        await a.insert("more;")
        await eventually(lambda: stored_rows(postgres_dsn, name) == rows + 1, what="only the new edit stored")
        await a.close()

    run(scenario())


def test_an_update_waiting_for_a_row_of_another_server_is_stored(servers, postgres_dsn):
    """A client back from another server can send an edit built on a row this server has not received yet:
    it is stored whole, so the other servers and PostgreSQL get it once the row arrives."""
    one, two = servers("sync-a"), servers("sync-b")
    name = room()
    base_doc, built_doc = Doc(), Doc()
    base = edit(base_doc, base_doc.get("text", type=Text), "base;")
    built_doc.apply_update(base)
    built = edit(built_doc, built_doc.get("text", type=Text), "more;")

    async def scenario():
        waiting = await YClient(one.url, name).connect()
        await waiting.ws.send(create_update_message(built))  # builds on `base`, which `one` lacks
        await eventually(lambda: stored_rows(postgres_dsn, name) == 1, what="the waiting edit stored")
        giver = await YClient(two.url, name).connect()
        await giver.ws.send(create_update_message(base))  # reaches `one` through Redis
        readers = [await YClient(server.url, name).connect() for server in (one, two)]
        await eventually(lambda: all(str(r.text) == "base;more;" for r in readers), what="both servers whole")
        assert stored_text(postgres_dsn, name) == "base;more;"
        for client in (waiting, giver, *readers):
            await client.close()

    run(scenario())


@pytest.mark.parametrize("step", crashpoints.STEPS)
def test_a_server_killed_at_any_step_of_an_update_loses_nothing(servers, postgres_dsn, step):
    """Killed before storing, the edit's only holder is its client, which sends it again on reconnecting
    (as Yjs providers do); killed at any later step, it is stored: its client may be gone for good."""
    doomed, survivor = servers("sync-doomed", RTMX_SYNC_CRASH_AT=step), servers("sync-b")
    name = room()

    async def scenario():
        writer = await YClient(doomed.url, name).connect()
        watcher = await YClient(survivor.url, name).connect()
        await writer.insert("kept;")
        await asyncio.to_thread(doomed.proc.wait, 10)
        assert doomed.proc.returncode == -signal.SIGKILL
        await eventually(lambda: writer.closed is not None, what="the writer to notice the dead server")
        if step == "applied":
            await writer.connect(survivor.url)
        await eventually(lambda: str(watcher.text) == "kept;", what=f"the edit on the survivor ({step})")
        await eventually(lambda: stored_text(postgres_dsn, name) == "kept;", what="the edit stored")
        await watcher.close()
        if writer.closed is None:
            await writer.close()

    run(scenario())
