"""The real Yjs client (yjs, y-websocket's WebsocketProvider, y-protocols
awareness, in Node) against rtmx-sync, next to pycrdt clients, across two servers.

Each Yjs client is a Node process running tests/yjs/driver.mjs, driven over a
line-based JSON protocol on stdin/stdout. Its node_modules come from
`npm ci` of tests/yjs/package-lock.json into a cache directory named after the
hash of package.json and package-lock.json ($RTMX_YJS_CACHE, else
$XDG_CACHE_HOME/rtmx-ha or ~/.cache/rtmx-ha): installed once, reused while the
lock file is unchanged, installed again when it changes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
from pycrdt import Array, Map, create_update_message

from conftest import YClient, eventually

YJS_DIR = Path(__file__).resolve().parent / "yjs"
NPM_CI_TIMEOUT = 600
REPLY_TIMEOUT = 10.0


def room() -> str:
    return f"yjs-{uuid.uuid4().hex[:8]}"


def run(coro):
    return asyncio.run(coro)


# --- node_modules, installed once per lock file ------------------------------------------------


def cache_root() -> Path:
    if os.environ.get("RTMX_YJS_CACHE"):
        return Path(os.environ["RTMX_YJS_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rtmx-ha"


def installed(directory: Path) -> bool:
    # npm ci writes node_modules/.package-lock.json last; the directory is renamed into place after it.
    return (directory / "node_modules" / ".package-lock.json").is_file() and (
        directory / "node_modules" / "y-websocket" / "package.json"
    ).is_file()


def npm_ci(npm: str) -> Path:
    """node_modules for tests/yjs/package-lock.json: the cached copy, or a fresh `npm ci`."""
    files = [YJS_DIR / "package.json", YJS_DIR / "package-lock.json"]
    digest = hashlib.sha256(b"\0".join(path.read_bytes() for path in files)).hexdigest()[:16]
    target = cache_root() / f"yjs-{digest}"
    if installed(target):
        return target
    # Install beside the target and rename it into place: an interrupted or concurrent
    # install never leaves a half-filled directory under the final name.
    staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for path in files:
        shutil.copy2(path, staging / path.name)
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=staging,
        capture_output=True,
        text=True,
        timeout=NPM_CI_TIMEOUT,
    )
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        pytest.fail(f"npm ci in {staging} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    if target.exists() and not installed(target):
        shutil.rmtree(target, ignore_errors=True)  # a broken leftover
    try:
        staging.rename(target)
    except OSError:
        if not installed(target):
            raise
        shutil.rmtree(staging, ignore_errors=True)  # another run installed it meanwhile
    return target


@pytest.fixture(scope="module")
def yjs_driver(tmp_path_factory) -> list[str]:
    """The command that starts one Yjs client: node DIR/driver.mjs, DIR/node_modules -> the cache."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail(
            "node and npm are needed for the Yjs client test: install Debian's nodejs and npm "
            "(`scripts/ensure-packages.sh @tests`, which `make unit` runs)"
        )
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    major = int(re.match(r"v(\d+)", version).group(1))
    if major < 18:
        pytest.fail(f"Node {version} is too old for the Yjs client test (18 or later)")
    modules = npm_ci(npm) / "node_modules"
    # Node resolves the driver's imports from its own directory: run a copy next to a
    # link to the cached node_modules, so the cache stays shared and untouched.
    workdir = tmp_path_factory.mktemp("yjs-driver")
    shutil.copy2(YJS_DIR / "driver.mjs", workdir / "driver.mjs")
    (workdir / "node_modules").symlink_to(modules, target_is_directory=True)
    return [node, str(workdir / "driver.mjs")]


# --- one Yjs client in a Node process ------------------------------------------------------------


class YjsClient:
    """Sends commands to driver.mjs and keeps the last state it reported."""

    def __init__(self, command: list[str], name: str):
        self.name = name
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.state: dict = {}
        self.client_id: int | None = None
        self._ids = itertools.count(1)
        self._replies: dict[int, dict] = {}
        self._changed = threading.Condition()
        self._writing = threading.Lock()
        self._reader = threading.Thread(target=self._read, name=f"yjs-{name}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue  # not ours (a library printing to stdout)
            with self._changed:
                if message.get("event") == "state":
                    self.state = message
                elif "id" in message:
                    self._replies[message["id"]] = message
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def _call(self, cmd: str, **args) -> dict:
        request_id = next(self._ids)
        with self._writing:
            self.proc.stdin.write(json.dumps({"id": request_id, "cmd": cmd, **args}) + "\n")
            self.proc.stdin.flush()
        with self._changed:
            if not self._changed.wait_for(
                lambda: request_id in self._replies or self.proc.poll() is not None, REPLY_TIMEOUT
            ):
                raise AssertionError(f"{self.name}: no reply to {cmd} within {REPLY_TIMEOUT} s")
            reply = self._replies.pop(request_id, None)
        if reply is None:
            raise AssertionError(f"{self.name}: the Node driver exited ({self.proc.poll()}) during {cmd}")
        if not reply["ok"]:
            raise AssertionError(f"{self.name}: {cmd} failed: {reply['error']}")
        return reply

    async def call(self, cmd: str, **args) -> dict:
        # In a thread: the event loop keeps serving the pycrdt clients meanwhile.
        return await asyncio.to_thread(self._call, cmd, **args)

    async def connect(self, url: str, room: str, token: str = "") -> YjsClient:
        args = {"token": token} if token else {}
        self.client_id = (await self.call("connect", url=url, room=room, **args))["clientID"]
        return self

    async def insert(self, text: str) -> None:
        await self.call("insert", text=text)

    @property
    def text(self) -> str:
        return self.state.get("text", "")

    @property
    def connected(self) -> bool:
        return self.state.get("status") == "connected" and self.state.get("synced", False)

    def peers(self) -> dict[int, dict]:
        """Awareness states this client knows, by client id (its own included)."""
        return {int(client): state for client, state in self.state.get("awareness", {}).items()}

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(5)
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                pipe.close()


@pytest.fixture()
def yjs(yjs_driver):
    """Starts Yjs clients (Node processes); every one is killed at the end of the test."""
    started: list[YjsClient] = []

    def start(name: str) -> YjsClient:
        client = YjsClient(yjs_driver, name)
        started.append(client)
        return client

    yield start
    for client in started:
        client.kill()


async def py_edit(client: YClient, edit) -> None:
    """Change a pycrdt client's document with edit(doc) and send the update, as YClient.insert does."""
    state = client.doc.get_state()
    edit(client.doc)
    await client.ws.send(create_update_message(client.doc.get_update(state)))


def tokens(text: str) -> list[str]:
    return [token for token in text.split(";") if token]


# --- the tests ----------------------------------------------------------------------------------


def test_yjs_and_pycrdt_clients_on_two_servers_converge(servers, yjs):
    one, two = servers("sync-a"), servers("sync-b")
    name = room()

    async def scenario():
        first = await yjs("yjs-1").connect(one.url, name)
        second = await yjs("yjs-2").connect(one.url, name)
        py = await YClient(two.url, name).connect()
        await eventually(lambda: first.connected and second.connected, what="Yjs clients synced")
        # Concurrent edits from the three clients, nobody waiting for the others.
        for i in range(20):
            await asyncio.gather(first.insert(f"js1-{i};"), second.insert(f"js2-{i};"), py.insert(f"py-{i};"))
        expected = sorted(f"{who}-{i}" for who in ("js1", "js2", "py") for i in range(20))
        await eventually(
            lambda: first.text == second.text == str(py.text) and sorted(tokens(first.text)) == expected,
            what="identical text on the Yjs and pycrdt clients",
        )
        # Each client's own edits stay in its order (Yjs and pycrdt merge the same way).
        for who in ("js1", "js2", "py"):
            assert [t for t in tokens(first.text) if t.startswith(f"{who}-")] == [f"{who}-{i}" for i in range(20)]
        await py.close()

    run(scenario())


def name_of(client: YjsClient, peer: YjsClient):
    """The user name `client` sees in `peer`'s awareness state (None: no state)."""
    return client.peers().get(peer.client_id, {}).get("user", {}).get("name")


def test_yjs_awareness_is_relayed_between_clients_of_one_server(servers, yjs):
    one = servers("sync-a")
    name = room()

    async def scenario():
        alice = await yjs("alice").connect(one.url, name)
        bob = await yjs("bob").connect(one.url, name)
        await eventually(lambda: alice.connected and bob.connected, what="Yjs clients synced")
        await alice.call("awareness", state={"user": {"name": "alice", "color": "#f00"}})
        await bob.call("awareness", state={"user": {"name": "bob", "color": "#00f"}})
        await eventually(
            lambda: name_of(alice, bob) == "bob" and name_of(bob, alice) == "alice",
            within=5,
            what="alice and bob to see each other's awareness",
        )
        await alice.call("awareness", state={"user": {"name": "alice", "cursor": 3}})
        await eventually(
            lambda: bob.peers().get(alice.client_id, {}).get("user", {}).get("cursor") == 3,
            within=5,
            what="bob to see alice's awareness change",
        )
        # Leaving removes the presence at the others (y-websocket sends a null state).
        await bob.call("disconnect")
        await eventually(
            lambda: bob.client_id not in alice.peers(), within=5, what="alice to see bob's awareness removed"
        )

    run(scenario())


def test_yjs_client_joining_later_sees_the_presence_already_there(servers, yjs):
    one = servers("sync-a")
    name = room()

    async def scenario():
        alice = await yjs("alice").connect(one.url, name)
        await eventually(lambda: alice.connected, what="alice synced")
        await alice.call("awareness", state={"user": {"name": "alice"}})
        bob = await yjs("bob").connect(one.url, name)
        await eventually(lambda: bob.connected, what="bob synced")
        await eventually(lambda: name_of(bob, alice) == "alice", within=5, what="bob to see alice's earlier awareness")

    run(scenario())


def test_yjs_client_reconnects_after_disconnect_and_after_its_server_is_killed(servers, yjs):
    one, two = servers("sync-a"), servers("sync-b")
    name = room()

    async def scenario():
        mover = await yjs("mover").connect(one.url, name)
        stayer = await yjs("stayer").connect(one.url, name)
        py = await YClient(two.url, name).connect()
        await eventually(lambda: mover.connected and stayer.connected, what="Yjs clients synced")
        await mover.insert("start;")
        await eventually(lambda: tokens(str(py.text)) == ["start"], what="first edit at the pycrdt client")

        # 1. provider.disconnect(): edits made meanwhile on every side.
        await mover.call("disconnect")
        await eventually(lambda: mover.state.get("status") == "disconnected", what="mover disconnected")
        await mover.insert("mover-offline-1;")
        await stayer.insert("stayer-meanwhile-1;")
        await py.insert("py-meanwhile-1;")
        await eventually(
            lambda: stayer.text == str(py.text) and len(tokens(stayer.text)) == 3, what="the others converge"
        )
        assert "mover-offline-1" not in stayer.text and "stayer-meanwhile-1" not in mover.text
        await mover.call("reconnect")
        after_disconnect = {"start", "mover-offline-1", "stayer-meanwhile-1", "py-meanwhile-1"}
        await eventually(
            lambda: mover.text == stayer.text == str(py.text) and set(tokens(mover.text)) == after_disconnect,
            what="convergence after provider.connect()",
        )

        # 2. The server of both Yjs clients is killed (SIGKILL); they retry on their own,
        # and are pointed at the surviving server, as HAProxy would send them there.
        one.kill()
        await eventually(
            lambda: mover.state.get("status") != "connected" and stayer.state.get("status") != "connected",
            what="Yjs clients to notice the dead server",
        )
        await mover.insert("mover-offline-2;")
        await mover.call("map_set", key="offline", value={"by": "mover", "n": 2})
        await stayer.insert("stayer-offline-2;")
        await py.insert("py-meanwhile-2;")
        await mover.call("reconnect", url=two.url)
        await stayer.call("reconnect", url=two.url)
        everything = after_disconnect | {"mover-offline-2", "stayer-offline-2", "py-meanwhile-2"}
        await eventually(
            lambda: (
                mover.connected
                and stayer.connected
                and mover.text == stayer.text == str(py.text)
                and set(tokens(mover.text)) == everything
                and len(tokens(mover.text)) == len(everything)
            ),
            what="convergence after the server was killed, with nothing lost",
        )
        await eventually(
            lambda: (
                py.doc.get("map", type=Map).to_py() == {"offline": {"by": "mover", "n": 2}}
                and stayer.state.get("map") == {"offline": {"by": "mover", "n": 2}}
            ),
            what="the offline map edit everywhere",
        )
        await py.close()

    run(scenario())


def test_yjs_map_and_array_interoperate_with_pycrdt(servers, yjs):
    one, two = servers("sync-a"), servers("sync-b")
    name = room()

    async def scenario():
        js = await yjs("yjs").connect(one.url, name)
        py = await YClient(two.url, name).connect()
        await eventually(lambda: js.connected, what="Yjs client synced")
        value = {"title": "Räksmörgås ✓", "count": 42, "ratio": 0.5, "ok": True, "none": None, "tags": ["a", "b"]}
        await js.call("map_set", key="meta", value=value)
        await js.call("array_push", values=["one", 2, {"three": [3]}])
        await eventually(
            lambda: (
                py.doc.get("map", type=Map).to_py() == {"meta": value}
                and py.doc.get("array", type=Array).to_py() == ["one", 2, {"three": [3]}]
            ),
            what="pycrdt to read the Yjs Y.Map and Y.Array",
        )

        def edit(doc):
            doc.get("map", type=Map)["from_python"] = "hello"
            doc.get("array", type=Array).append("four")

        await py_edit(py, edit)
        await eventually(
            lambda: (
                js.state.get("map") == {"meta": value, "from_python": "hello"}
                and js.state.get("array") == ["one", 2, {"three": [3]}, "four"]
            ),
            what="Yjs to read pycrdt's Y.Map and Y.Array edits",
        )
        await py.close()

    run(scenario())


def test_yjs_client_sends_its_token(servers, yjs, tmp_path):
    from rtmx_sync.auth import issue

    key = uuid.uuid4().hex.encode() * 2
    (tmp_path / "keys").write_bytes(key + b"\n")
    one = servers("sync-a", RTMX_SYNC_SERVER_AUTH_KEY_FILE=str(tmp_path / "keys"))
    name = room()
    token = issue(key, name, "yjs-user", ttl_s=300)

    async def scenario():
        js = await yjs("yjs").connect(one.url, name, token=token)
        stranger = await yjs("stranger").connect(one.url, name, token=issue(key, "other-room", "x", ttl_s=300))
        await eventually(lambda: js.connected, what="Yjs client with a token synced")
        await js.insert("authorised;")
        py = await YClient(one.url, name, token=token).connect()
        await eventually(lambda: str(py.text) == "authorised;", what="the edit at a pycrdt client")
        await eventually(
            lambda: (stranger.state.get("closed") or {}).get("code") == 1008,
            within=5,
            what="a token for another room refused",
        )
        assert stranger.text == "" and not stranger.connected
        await py.close()

    run(scenario())
