"""A blocking client over the platform's public channels (gss, auth, relay).

    with Client("https://gss:7400", ca="ca.pem") as tw:
        tw.login("ada", password)
        project = tw.create_project("survey", "data analysis")
        with tw.open_session(project["id"]) as session:
            result = session.call("kriging", "interpolate", points=..., values=..., grid=...)

The network work runs on a private event loop in a background thread, so the API is plain
blocking calls and session events keep arriving while the caller does something else.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import ssl
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from twinstack.wire.errors import ActionError, ServiceUnavailable

T = TypeVar("T")


class SessionFailed(Exception):
    """The session could not start or stopped for good; carries the platform's reason."""

    def __init__(self, event: dict[str, Any]) -> None:
        detail = f" (exit code {event['exit_code']})" if event.get("exit_code") is not None else ""
        super().__init__(f"session {event.get('session')} {event.get('state', 'failed')}: "
                         f"{event.get('reason')}{detail}")
        self.event = event
        self.exit_code = event.get("exit_code")
        self.output: list[str] = event.get("output") or []


class _Loop:
    """An event loop in a daemon thread that blocking methods hand coroutines to."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="twinstack-client")
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class Client:
    def __init__(self, url: str, ca: str | Path | None = None, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.ssl = ssl.create_default_context(cafile=str(ca) if ca else None)
        self.token: str | None = None
        self.user: dict[str, Any] | None = None
        self._loop = _Loop()
        self._http: aiohttp.ClientSession = self._loop.run(self._new_http())
        self._info: dict[str, Any] | None = None
        self.attached: list[Session] = []  # sessions whose WebSocket is open

    async def _new_http(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.ssl))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop every session connection (the sessions keep running) and the HTTP pool."""
        for session in list(self.attached):
            session.detach()
        self._loop.run(self._http.close())
        self._loop.close()

    # plumbing -------------------------------------------------------------------------------

    async def _post(self, url: str, action: str, params: dict[str, Any]) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            async with self._http.post(f"{url}/execute", json={"action": action,
                                                              "params": params},
                                       headers=headers,
                                       timeout=aiohttp.ClientTimeout(total=self.timeout)) as r:
                body = await r.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ServiceUnavailable(f"{url}: {exc or type(exc).__name__}") from exc
        if r.status >= 400:
            raise ActionError.from_json(r.status, (body or {}).get("error", {}))
        return body["result"]

    def _call(self, url: str, action: str, **params: Any) -> Any:
        return self._loop.run(self._post(url, action, {k: v for k, v in params.items()
                                                       if v is not None}))

    def gss(self, action: str, **params: Any) -> Any:
        """Any public action of the global session service."""
        return self._call(self.url, action, **params)

    # the platform ------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        if self._info is None:
            self._info = self.gss("info")
        return self._info

    def login(self, user: str, password: str) -> dict[str, Any]:
        reply = self._call(self.info()["auth_url"], "login", user=user, password=password)
        self.token, self.user = reply["token"], reply["user"]
        return reply

    def logout(self) -> None:
        self._call(self.info()["auth_url"], "logout")
        self.token = None

    def create_project(self, name: str, session_type: str) -> dict[str, Any]:
        return self.gss("create_project", name=name, session_type=session_type)

    def projects(self) -> list[dict[str, Any]]:
        return self.gss("list_projects")["projects"]

    def rename_project(self, project_id: str, name: str) -> dict[str, Any]:
        return self.gss("rename_project", project=project_id, name=name)

    def delete_project(self, project_id: str) -> None:
        self.gss("delete_project", project=project_id)

    def share(self, project_id: str, *, user: str | None = None, group: str | None = None,
              role: str = "viewer") -> None:
        self.gss("share_project", project=project_id, user=user, group=group, role=role)

    def unshare(self, project_id: str, *, user: str | None = None,
                group: str | None = None) -> None:
        self.gss("unshare_project", project=project_id, user=user, group=group)

    def sessions(self) -> list[dict[str, Any]]:
        return self.gss("list_sessions")["sessions"]

    def open_session(self, project_id: str, timeout: float = 120.0) -> Session:
        """Open (or join) the project's session and wait until its services are ready."""
        record = self.gss("open_session", project=project_id)
        session = Session(self, record)
        try:
            session.wait_ready(timeout)
        except BaseException:
            session.detach()
            raise
        return session


class Session:
    """A live session: call its compute services, read its events, close it."""

    def __init__(self, client: Client, record: dict[str, Any]) -> None:
        self.client = client
        self.id: str = record["id"]
        self.project_id: str = record["project"]
        self.state: str = record["state"]
        self.services: dict[str, Any] = record.get("services") or {}
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._ids = itertools.count(1)
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._state_changed = threading.Condition()
        self._last_failure: dict[str, Any] | None = None
        self._ws: aiohttp.ClientWebSocketResponse = client._loop.run(self._connect())
        self._reader = asyncio.run_coroutine_threadsafe(self._read(), client._loop.loop)
        client.attached.append(self)

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        relay = self.client.info()["relay_url"]
        try:
            return await self.client._http.ws_connect(
                f"{relay}/session?id={self.id}", heartbeat=30,
                headers={"Authorization": f"Bearer {self.client.token}"})
        except aiohttp.WSServerHandshakeError as exc:
            raise ActionError(exc.status, "refused", f"relay refused session {self.id}: "
                              f"{exc.message}") from exc

    async def _read(self) -> None:
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = msg.json()
            if "event" in data:
                self._on_event(data["event"])
            else:
                future = self._replies.pop(data.get("id"), None)
                if future is not None and not future.done():
                    future.set_result(data)
        for future in self._replies.values():
            if not future.done():
                future.set_exception(ServiceUnavailable("the relay closed the connection"))

    def _on_event(self, event: dict[str, Any]) -> None:
        self._events.put(event)
        state = event.get("state")
        if state is None:
            return
        with self._state_changed:
            self.state = state
            if event.get("services"):
                self.services = event["services"]
            if state in ("failed", "lost", "closed"):
                self._last_failure = event
            self._state_changed.notify_all()

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        with self._state_changed:
            while self.state != "ready":
                if self._last_failure is not None or self.state in ("failed", "lost", "closed"):
                    raise SessionFailed(self._last_failure or {"session": self.id,
                                                               "state": self.state})
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"session {self.id} not ready after {timeout:g} s "
                                       f"(state {self.state})")
                self._state_changed.wait(min(left, 0.5))

    async def _request(self, service: str, action: str, params: dict[str, Any]) -> Any:
        call_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[call_id] = future
        await self._ws.send_json({"id": call_id, "service": service, "action": action,
                                  "params": params})
        reply = await future
        if "error" in reply:
            raise ActionError.from_message(reply["error"])
        return reply["result"]

    def call(self, service: str, action: str, *, timeout: float | None = None,
             **params: Any) -> Any:
        """Run `action` of one of this session's compute services (through the relay).

        Waits at most `timeout` seconds (default: as long as the action takes).
        """
        try:
            return self.client._loop.run(self._request(service, action, params), timeout)
        except TimeoutError as exc:
            raise TimeoutError(f"{service}.{action} gave no answer in {timeout:g} s") from exc

    def events(self, timeout: float = 0.0) -> Iterator[dict[str, Any]]:
        """Events received so far; with a timeout, also those arriving within it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                yield self._events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return

    def wait_for_event(self, match: Callable[[dict[str, Any]], bool],
                       timeout: float = 60.0) -> dict[str, Any]:
        for event in self.events(timeout):
            if match(event):
                return event
        raise TimeoutError(f"no matching event within {timeout:g} s")

    def detach(self) -> None:
        """Leave the session running (others may be in it) and drop the connection."""
        if self in self.client.attached:
            self.client.attached.remove(self)
            self.client._loop.run(self._ws.close())
            self._reader.cancel()

    def close(self) -> None:
        """Close the session for everyone: its services stop."""
        try:
            self.client.gss("close_session", session=self.id)
        finally:
            self.detach()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
