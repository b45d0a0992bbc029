"""The ASGI application: lifespan, the route table, CORS, and the one place errors become statuses."""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import functools
import signal
import subprocess
from time import perf_counter

import structlog

from hogflare import error_issues, metrics
from hogflare._hogflare import SignatureVerifier, Store
from hogflare.capture import ANALYTICS_V1, CAPTURE_ROUTES, CaptureService, v1_error
from hogflare.commit import GroupCommitter
from hogflare.config import COMMIT_DRAIN_SECS, SHIPPER_STOP_GRACE_SECS, Settings
from hogflare.debug import person_debug
from hogflare.errors import AuthError, HogflareError, OutboxFullError, StorageError, status_for
from hogflare.flags import FlagsService
from hogflare.flags_api import DEFINITIONS_ROUTES, FLAGS_ROUTES, FlagsEndpoints, remote_config_key
from hogflare.http import (
    CORS_METHODS,
    ClientDisconnectedError,
    Receive,
    Request,
    Response,
    Scope,
    Send,
    StallWatch,
    bearer_matches,
    cors_headers,
    error,
    ok,
)
from hogflare.logs import begin_request, configure, end_request, flush_summaries
from hogflare.private_api import ProjectApi, project_route
from hogflare.remote_config import PUBLIC_LISTS, array_config, public_list
from hogflare.static_assets import static_asset
from hogflare.store import open_store
from hogflare.supervisor import shipper_alive, spawn, stop_when_orphaned

log = structlog.get_logger("hogflare.app")

_HEALTH = {"/_health", "/_liveness", "/_livez"}
_READINESS = {"/_readiness", "/_readyz"}
_METRICS = "/metrics"
#: The ``route`` label of each path hogflare serves (without its trailing slash); a fixed set, so
#: scanners probing random paths add no series.
_ROUTE_LABELS = {
    path: path
    for path in (
        *CAPTURE_ROUTES,
        *FLAGS_ROUTES,
        *DEFINITIONS_ROUTES,
        *PUBLIC_LISTS,
        *_HEALTH,
        *_READINESS,
        "/healthz",
        _METRICS,
    )
}
_SHIPPER_CHECK_SECS = 1.0
#: Past every bounded step of a shutdown, before Granian kills the worker: time to dump its stacks.
_STUCK_SHUTDOWN_MARGIN_SECS = 5.0
#: Bodies above this size are hashed on a worker thread, so the event loop keeps serving.
_SIGNATURE_OFFLOAD_BYTES = 256 * 1024
_CUT_SHORT = "the request body was cut short: the connection closed or its framing broke before it was complete"


def route_label(path: str) -> str:
    """The ``route`` label of a request path."""
    path = path.rstrip("/") or "/"
    label = _ROUTE_LABELS.get(path)
    if label is not None:
        return label
    parts = path.split("/")
    if len(parts) == 4 and parts[1] == "array" and parts[3] in {"config", "config.js"}:
        return f"/array/:token/{parts[3]}"
    if path.startswith("/__debug/person/"):
        return "/__debug/person"
    if path.startswith("/static/"):
        return "/static"
    if error_issues.is_status_path(path):
        return "/errors/api/issues/:fingerprint/status"
    if remote_config_key(path) is not None:
        return "/api/projects/:project/feature_flags/:key/remote_config"
    project = project_route(path)
    if project is not None:
        return "/api/projects/:project/persons" if project[1] else "/api/projects/:project"
    return "other"


def _cors_methods(path: str) -> bytes:
    """What a preflight for ``path`` allows: the status route is also changed by PATCH."""
    return error_issues.CORS_METHODS if error_issues.is_status_path(path) else CORS_METHODS


class App:
    """hogflare as an ASGI callable. Settings come from the environment at startup unless given."""

    def __init__(self, settings: Settings | None = None) -> None:
        self._given_settings = settings
        self.settings: Settings = settings or Settings()
        self.store: Store | None = None
        self.committer: GroupCommitter | None = None
        self.capture: CaptureService | None = None
        self.flags: FlagsEndpoints | None = None
        self.projects: ProjectApi | None = None
        self.signatures: SignatureVerifier | None = None
        self.watch = StallWatch(self.settings.body_timeout_secs, self.settings.body_deadline_secs)
        self._supervisor: asyncio.Task[None] | None = None
        self._shipper_process: subprocess.Popen[bytes] | None = None

    async def startup(self) -> None:
        settings = self._given_settings or Settings.from_env()
        self.settings = settings
        configure(settings.log_format, settings.log_level)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        if settings.store == "off":
            log.warning("HOGFLARE_STORE=off: events are answered 200 and never stored (for benchmarks only)")
        else:
            self.store = open_store(settings)
            self.committer = GroupCommitter(
                self.store,
                dedupe_window_days=settings.dedupe_window_days,
                max_outbox_bytes=settings.outbox_limit,
            )
        self.watch = StallWatch(settings.body_timeout_secs, settings.body_deadline_secs)
        self.capture = CaptureService(settings, self.committer, self.watch)
        self.flags = FlagsEndpoints(settings, FlagsService(settings, self.store), self.watch)
        self.projects = ProjectApi(settings, self.store)
        if settings.signing_secret:
            self.signatures = SignatureVerifier(
                settings.signing_secret.encode(), tolerance_secs=settings.signature_tolerance_secs
            )
        stop_when_orphaned()
        # Last: a worker whose startup failed must leave no shipper behind.
        if self.committer is not None and settings.shipper == "auto":
            self._supervisor = asyncio.create_task(self._supervise_shipper())

    async def shutdown(self) -> None:
        # A shutdown that hangs past its bounded steps names where it hangs before it is killed.
        faulthandler.dump_traceback_later(self.settings.worker_stop_secs + _STUCK_SHUTDOWN_MARGIN_SECS)
        try:
            await self._shut_down()
        finally:
            faulthandler.cancel_dump_traceback_later()

    async def _shut_down(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self.committer is not None:
            await self.committer.close(COMMIT_DRAIN_SECS)
        await self.watch.close()
        process = self._shipper_process
        if process is not None and process.poll() is None:
            # The shipper flushes what it holds on SIGTERM; give it time to finish its commit.
            process.send_signal(signal.SIGTERM)
            try:
                grace = self.settings.shutdown_timeout_secs + self.settings.pipeline_timeout_secs
                await asyncio.to_thread(process.wait, grace + SHIPPER_STOP_GRACE_SECS)
            except subprocess.TimeoutExpired:
                log.warning("shipper did not stop in time; the outbox keeps its rows for the next start")
        flush_summaries()
        metrics.flush()

    async def _supervise_shipper(self) -> None:
        while True:
            process = self._shipper_process
            if process is not None and process.poll() is not None:
                self._shipper_process = None
            if self._shipper_process is None and not await asyncio.to_thread(shipper_alive, self.settings):
                self._shipper_process = spawn(self.settings)
            await asyncio.sleep(_SHIPPER_CHECK_SECS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                # What the worker does after its lifespan (its interpreter joining threads as it
                # exits) has no bound of hogflare's: a hang there names where it hangs too before
                # Granian kills the worker. A worker that exits in time takes the timer with it.
                faulthandler.dump_traceback_later(_STUCK_SHUTDOWN_MARGIN_SECS)
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = perf_counter()
        request = Request(scope, receive)
        rid, bound = begin_request(request.header(b"x-request-id"))
        status = 499
        try:
            try:
                response = await self._route(request)
            except HogflareError as exc:
                response = self._error_response(exc, request)
            except ClientDisconnectedError:
                # Granian also says "disconnect" for a body whose framing broke (bad chunk sizes,
                # fewer bytes than Content-Length): that client is still there, and left without
                # an answer it would get Granian's 500 and retry for ever. One that really left
                # is not there to read this.
                response = self._error(request, 400, _CUT_SHORT)
            except Exception:
                log.exception("unhandled error", path=request.path, method=request.method)
                response = self._error(request, 500, "internal server error")
            headers = cors_headers(request, _cors_methods(request.path))
            headers.append((b"x-request-id", rid.encode()))
            await response.send(send, headers)
            status = response.status
        finally:
            metrics.observe_request(route_label(request.path), status, perf_counter() - started)
            end_request(bound)

    def _error_response(self, exc: HogflareError, request: Request) -> Response:
        status = status_for(exc)
        headers: list[tuple[bytes, bytes]] = []
        if isinstance(exc, OutboxFullError):
            headers.append((b"retry-after", str(max(5, round(self.settings.flush_interval_secs * 4))).encode()))
        elif isinstance(exc, StorageError):
            headers.append((b"retry-after", b"5"))
        if status >= 500:
            log.warning("request refused", error=str(exc), status=status)
        return self._error(request, status, str(exc), headers)

    @staticmethod
    def _error(
        request: Request, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None
    ) -> Response:
        """An error in the shape the route's clients read: capture v1's, or Hogflare's."""
        if CAPTURE_ROUTES.get(request.path.rstrip("/")) == ANALYTICS_V1:
            return v1_error(status, message, request, headers)
        return error(status, message, headers)

    async def _route(self, request: Request) -> Response:
        path = request.path.rstrip("/") or "/"
        if request.method == "OPTIONS":
            return ok()
        kind = CAPTURE_ROUTES.get(path)
        if self.signatures is not None and (kind is not None or path in FLAGS_ROUTES):
            if kind is not None and request.query_param("data") is not None:
                # The signature covers the body only, and a capture route reads `data=` in the
                # query before the body: a payload there would go unsigned.
                raise AuthError("a signed request carries its payload in the body, not in the query string")
            if request.method == "POST":
                await self._check_signature(request, kind)
        if kind is not None:
            if request.method not in {"GET", "POST"}:
                return self._error(request, 405, "method not allowed")
            assert self.capture is not None, "startup() has not run"
            return await self.capture.handle(request, kind)
        if path in FLAGS_ROUTES:
            assert self.flags is not None, "startup() has not run"
            return await self.flags.answer(request)
        if path in DEFINITIONS_ROUTES:
            assert self.flags is not None, "startup() has not run"
            return self.flags.definitions(request)
        fingerprint = error_issues.fingerprint_of(request.raw_path)
        if fingerprint is not None:
            assert self.capture is not None, "startup() has not run"
            return await error_issues.change_status(self.settings, self.capture, self.watch, request, fingerprint)
        return await self._sdk_reads(request, path)

    async def _sdk_reads(self, request: Request, path: str) -> Response:
        """What SDKs and operators read: remote config, PostHog's public lists, a person; else
        the operations routes."""
        if path.startswith("/array/"):
            parts = path.split("/")
            if len(parts) == 4 and parts[3] in {"config", "config.js"}:
                if request.method not in {"GET", "HEAD"}:
                    return error(405, "method not allowed")
                assert self.flags is not None, "startup() has not run"
                has_flags = self.flags.has_active_flags()
                return array_config(
                    self.settings, parts[2], javascript=parts[3] == "config.js", has_feature_flags=has_flags
                )
        remote_config_flag = remote_config_key(path)
        if remote_config_flag is not None:
            assert self.flags is not None, "startup() has not run"
            return self.flags.remote_config(request, remote_config_flag)
        if path in PUBLIC_LISTS and request.method in {"GET", "HEAD"}:
            return public_list(self.settings, path, request.query_param("token"))
        project = project_route(path)
        if project is not None:
            assert self.projects is not None, "startup() has not run"
            return self.projects.answer(request, *project)
        if path.startswith("/__debug/person/") and request.method == "GET":
            return person_debug(self.settings, self.store, request, path.removeprefix("/__debug/person/"))
        if path.startswith("/static/") and request.method in {"GET", "HEAD"}:
            return static_asset(path)
        return await self._operations(request, path)

    async def _operations(self, request: Request, path: str) -> Response:
        """Health, readiness and metrics, for orchestrators and monitoring; else 404."""
        if path == _METRICS and request.method == "GET":
            token = self.settings.metrics_token
            if token is not None and not bearer_matches(request.header(b"authorization"), token):
                return error(401, "metrics need Authorization: Bearer with HOGFLARE_METRICS_TOKEN")
            return metrics.render(self.store, self.settings)
        if path == "/healthz":
            return Response.json({"status": "ok"})
        if path in _HEALTH:
            return Response.json({"status": "alive"})
        if path in _READINESS:
            return await self._readiness()
        return error(404, f"no route for {request.method} {request.path}")

    async def _check_signature(self, request: Request, kind: str | None) -> None:
        """Refuse a payload not signed with ``POSTHOG_SIGNING_SECRET`` (``AuthError``, 401).

        The body read here is the one the route handler then gets, so both see the same bytes."""
        assert self.signatures is not None, "startup() has not run"
        assert self.capture is not None, "startup() has not run"
        limit = self.capture.body_limit(kind) if kind is not None else self.settings.max_body_bytes
        body = await request.body(limit, self.watch)
        verify = functools.partial(
            self.signatures.verify,
            body,
            posthog_signature=request.header(b"x-posthog-signature"),
            hub_signature=request.header(b"x-hub-signature"),
            timestamp=request.header(b"x-posthog-timestamp"),
        )
        if len(body) > _SIGNATURE_OFFLOAD_BYTES:
            await asyncio.to_thread(verify)
        else:
            verify()

    async def _readiness(self) -> Response:
        problems: list[str] = []
        if self.settings.store == "on":
            if self.store is None:
                problems.append("store not open")
            else:
                try:
                    self.store.check()
                except HogflareError as exc:
                    problems.append(f"store: {exc}")
            stalled = self.committer.stalled_secs() if self.committer is not None else None
            if stalled is not None:
                problems.append(f"no commit finished for {stalled:.0f} s")
            if self.settings.shipper == "auto" and not await asyncio.to_thread(shipper_alive, self.settings):
                problems.append("shipper not running")
        if problems:
            return Response.json({"status": "unavailable", "problems": problems}, 503)
        return Response.json({"status": "ready"})


app = App()
