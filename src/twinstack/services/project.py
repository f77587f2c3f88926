"""What every compute service that works on a session's project shares: a link to the
session's model service (the one writer of the project's history), the blob store, one compute
thread, and outputs cached by the hash of their inputs.

A service reads entities from the model, computes on the compute thread, puts its blobs first
and then commits the entities that name them, on behalf of the user who asked; a commit refused
because the model moved meanwhile (409) is computed again from the new head.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, Field

from twinstack.exitcodes import ExitCode, FatalError
from twinstack.store.blobs import BlobStore
from twinstack.wire.actions import Call, editing_user
from twinstack.wire.client import LinkKeeper, ServiceClient
from twinstack.wire.errors import ActionError
from twinstack.wire.identity import PeerIdentity
from twinstack.wire.runtime import ServiceBase

T = TypeVar("T")
CALLERS = ("relay", "admin")
MODEL_TIMEOUT = 60.0
RETRIES = 3  # commits refused because the model moved meanwhile are recomputed this often


class ProjectService(ServiceBase):
    """A compute service of a session with a model (the LSS gives --model-url and --session)."""

    async def start(self) -> None:
        s = self.settings
        if s.model_url is None or s.session is None:
            raise FatalError(ExitCode.CONFIG_ERROR, f"the {self.name} service needs "
                             "--model-url and --session (the LSS gives both)")
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name)
        self.blobs = BlobStore(s.blob_path())
        self.model = LinkKeeper(
            ServiceClient(s.model_url, self.runtime.tls.client(), timeout=MODEL_TIMEOUT,
                          max_message_bytes=s.max_message_bytes + 4096),
            PeerIdentity("model", s.session))

    async def stop(self) -> None:
        await self.model.close()
        self._worker.shutdown(wait=False, cancel_futures=True)

    async def _compute(self, fn: Callable[..., T], *args: Any) -> T:
        """Run numerics on the one compute thread (kernels that are not thread-safe, and one
        heavy job at a time per session)."""
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    async def _model(self, action: str, **params: Any) -> Any:
        link = await self.model.get()
        return await link.call(action, params, timeout=MODEL_TIMEOUT)

    @staticmethod
    def _editor(call: Call) -> str:
        """The user this call edits for, or 403 before any work is done."""
        return editing_user(call) or (call.peer.service if call.peer else "unknown")

    async def _entities(self, ids: Iterable[str] | None = None) -> tuple[int | None,
                                                                          list[dict[str, Any]]]:
        found = await self._model("entities", ids=list(ids) if ids is not None else None)
        return found["state"], found["entities"]

    async def _entity(self, entity_id: str, kinds: Iterable[str], what: str) -> dict[str, Any]:
        """One entity of the head, of one of `kinds`, or 404/422 naming the parameter."""
        _, found = await self._entities([entity_id])
        if not found:
            raise ActionError(404, "not_found", f"no {what} {entity_id} in the model",
                              "params.id")
        entity = found[0]
        if entity["kind"] not in kinds:
            raise ActionError(422, "invalid_params", f"{entity['name']} is a "
                              f"{entity['kind']}, not a {what}", "params.id")
        return entity

    async def _commit(self, author: str, description: str, base: int | None,
                      **changes: Any) -> dict[str, Any]:
        return dict(await self._model("commit", author=author, description=description,
                                      base=base, evaluated=True, **changes))

    async def _retrying(self, attempt: Callable[[], Any]) -> Any:
        """Run a read-compute-commit attempt again when the model moved under it (409)."""
        for tries in range(RETRIES, 0, -1):
            try:
                return await attempt()
            except ActionError as err:
                if err.status != 409 or err.code != "conflict" or tries == 1:
                    raise
        raise AssertionError("unreachable")

    async def _output(self, key: Any, make: Callable[[], bytes]) -> tuple[str, bool]:
        """A blob made by `make` (on the compute thread) for this project, or the one made
        before from the same inputs: `key` names them all (input blob hashes, parameters,
        the service and its version). Returns (hash, whether it was computed now)."""
        from twinstack import __version__

        name = hashlib.sha256(json.dumps([self.name, __version__, key], sort_keys=True,
                                         default=str).encode()).hexdigest()
        digest = await asyncio.to_thread(self.blobs.recall, name)
        made = digest is None
        if digest is None:
            data = await self._compute(make)
            digest = await asyncio.to_thread(self.blobs.put, data)
            await asyncio.to_thread(self.blobs.remember, name, digest)
        await self._model("keep_blobs", blobs=[digest])  # its participants may download it
        return digest, made


class JobParams(BaseModel):
    """Which job a status or cancel call is about (a service with jobs runs one at a time)."""

    model_config = {"extra": "forbid"}

    job: str | None = Field(None, description="default: the current or last job")


class JobLike(Protocol):
    id: str
    status: str


J = TypeVar("J", bound=JobLike)


def the_job(job: J | None, wanted: str | None, running: bool = False) -> J:
    """The session's current or last job, if it is the one `wanted` (None: any), or 404;
    409 if it must be `running` and is not."""
    if job is None or (wanted is not None and wanted != job.id):
        what = f"job {wanted}" if wanted else "job"
        raise ActionError(404, "not_found", f"no {what} in this session", "params.job")
    if running and job.status != "running":
        raise ActionError(409, "not_running", f"job {job.id} is {job.status}", "params.job")
    return job
