"""The application factory: middleware, routers and error handlers, logs, metrics and traces;
the lifespan owns the database engine."""

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import APIRouter, Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.middleware import Middleware
from starlette.types import ASGIApp

from conduit import __version__, background  # noqa: F401 (registers every job)
from conduit.admin.router import router as admin_router
from conduit.articles import repository as articles_repository
from conduit.articles.router import CACHED_READS as ARTICLE_CACHED_READS
from conduit.articles.router import router as articles_router
from conduit.comments.router import router as comments_router
from conduit.notifications.router import router as notifications_router
from conduit.platform.backends import close_backends, open_backends
from conduit.platform.cached_reads import AnonymousCachedReads
from conduit.platform.db import migrations
from conduit.platform.db.embedded import start_embedded_postgres
from conduit.platform.db.engine import (
    create_engine,
    create_read_sessionmaker,
    create_sessionmaker,
)
from conduit.platform.errors import install_error_handlers
from conduit.platform.etag import ETags
from conduit.platform.health import router as health_router
from conduit.platform.http import create_http_client
from conduit.platform.idempotency import install_idempotency
from conduit.platform.jobs.context import Resources
from conduit.platform.jobs.worker import Worker
from conduit.platform.middleware import (
    REQUEST_ID_HEADER,
    CountInFlight,
    LimitBodySize,
    RecordRequests,
    RenderUnexpectedErrors,
    RequireJsonBody,
    SecurityHeaders,
    StripTrailingSlash,
    is_valid_request_id,
    new_request_id,
)
from conduit.platform.observability import metrics, tracing
from conduit.platform.observability.logging import configure_logging_unless_done
from conduit.platform.rate_limit import RateLimitHeaders, enforce_rate_limits
from conduit.platform.settings import Settings, SettingsError, get_settings
from conduit.profiles.router import CACHED_READS as PROFILE_CACHED_READS
from conduit.profiles.router import router as profiles_router
from conduit.users.router import router as users_router
from conduit.webhooks.router import router as webhooks_router

logger = logging.getLogger(__name__)

API_PREFIX = "/api"


async def resolve_database_url(settings: Settings) -> str:
    """DATABASE_URL when configured; otherwise the embedded server, started on demand."""
    if settings.database_url is not None:
        return settings.database_url
    url = await start_embedded_postgres(settings.data_dir)
    logger.info("using the embedded PostgreSQL in %s", settings.data_dir.resolve())
    return url


async def _check_search_language(
    sessionmaker: async_sessionmaker[AsyncSession], language: str
) -> None:
    """Refuse to start with a SEARCH_LANGUAGE the database lacks, which would fail every
    search and every new article."""
    async with sessionmaker() as session:
        if not await articles_repository.text_search_configuration_exists(session, language):
            raise SettingsError(
                f"SEARCH_LANGUAGE={language} is not one of the database's text search "
                "configurations (its pg_ts_config catalog lists them, e.g. english, simple)"
            )


def _freeze_startup_objects() -> None:
    """Keep what start-up built (modules, routes, schemas, mappers: some 190,000 objects, nearly
    all the process will ever hold) out of the garbage collector's full collections.

    Those scanned all of them about once a second under load, pausing every request for about
    140 ms each time; after `gc.freeze()` a full collection scans only what requests have made
    since, in about a millisecond.
    """
    gc.collect()
    gc.freeze()


def _cors(settings: Settings) -> Middleware:
    return Middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_origin_regex=settings.cors_origin_regex,
        allow_credentials=settings.cors_allow_credentials,
        allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
        allow_headers=[
            "Authorization",
            "Content-Type",
            "X-Requested-With",
            "If-None-Match",
            "Idempotency-Key",
            REQUEST_ID_HEADER,
        ],
        expose_headers=[
            REQUEST_ID_HEADER,
            "ETag",
            "Retry-After",
            "X-RateLimit-Limit",
            "X-RateLimit-Remaining",
            "X-RateLimit-Reset",
            "Idempotent-Replayed",
        ],
        max_age=600,
    )


def _wrapped(app: ASGIApp, middleware: list[Middleware]) -> ASGIApp:
    """`app` inside `middleware`, outermost first, as `add_middleware` would stack them."""
    for layer in reversed(middleware):
        app = layer.cls(app, *layer.args, **layer.kwargs)
    return app


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging_unless_done(settings)
    tracer_provider = tracing.create_tracer_provider(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database_url = await resolve_database_url(settings)
        if settings.should_migrate_on_start:
            await migrations.upgrade(database_url)
        engine = create_engine(settings, database_url)
        metrics.track_pool(engine)
        app.state.sessionmaker = create_sessionmaker(engine)
        app.state.read_sessionmaker = create_read_sessionmaker(engine)
        # Before tracing starts: a start-up check is no request's work.
        try:
            await _check_search_language(app.state.sessionmaker, settings.search_language)
        except BaseException:
            await engine.dispose()
            raise
        if tracer_provider is not None:
            tracing.instrument_engine(engine, tracer_provider)
            tracing.instrument_redis(tracer_provider)
        app.state.settings = settings
        app.state.jwt_secret = settings.jwt_signing_key()
        app.state.engine = engine
        open_backends(app, settings)
        worker, worker_task = None, None
        if settings.runs_worker_in_process:
            worker = Worker(
                Resources(
                    settings=settings,
                    http=create_http_client(settings),
                    cache=app.state.cache,
                    redis=app.state.redis,
                    live=app.state.live,
                ),
                engine,
            )
            worker_task = asyncio.create_task(worker.run(), name="conduit-worker")
        _freeze_startup_objects()
        try:
            yield
        finally:
            gc.unfreeze()
            if worker is not None and worker_task is not None:
                await worker.stop(worker_task)
                await worker.resources.http.aclose()
            await close_backends(app)
            await engine.dispose()
            metrics.forget_pool()
            metrics.process_stopped()
            if tracer_provider is not None:
                tracing.uninstrument_redis()
                tracer_provider.shutdown()

    app = FastAPI(
        title="Conduit",
        version=__version__,
        summary="The RealWorld publishing and social API on async PostgreSQL.",
        lifespan=lifespan,
        redirect_slashes=False,
        telemetry=tracing.fastapi_telemetry(tracer_provider),
    )
    app.state.settings = settings
    app.state.tracer_provider = tracer_provider

    api = APIRouter(prefix=API_PREFIX, dependencies=[Depends(enforce_rate_limits)])
    for router in (
        users_router,
        profiles_router,
        articles_router,
        comments_router,
        notifications_router,
        webhooks_router,
        admin_router,
    ):
        api.include_router(router)
    app.include_router(api)
    app.include_router(health_router)
    install_error_handlers(app)
    install_idempotency(app)

    pages = (app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url)
    request_id = Middleware(
        CorrelationIdMiddleware,
        header_name=REQUEST_ID_HEADER,
        generator=new_request_id,
        validator=is_valid_request_id,
    )
    security_headers = Middleware(SecurityHeaders, page_paths=[page for page in pages if page])
    cors = _cors(settings)
    # Outermost first: a request meets StripTrailingSlash, the cached reads, the request id,
    # security headers, the access log and HTTP metrics, the in-flight gauge, CORS, the body
    # limit, then the rest. What the cached reads answer passes through the envelope: the same
    # middleware, less what only a routed request needs (which they do themselves: validators).
    outer = [request_id, security_headers, Middleware(RecordRequests), Middleware(CountInFlight)]
    inner = [
        cors,
        Middleware(LimitBodySize, max_bytes=settings.max_body_bytes),
        Middleware(RenderUnexpectedErrors),
        Middleware(RateLimitHeaders),
        Middleware(RequireJsonBody),
        Middleware(ETags),
    ]
    envelope = [*outer, cors, Middleware(RenderUnexpectedErrors), Middleware(RateLimitHeaders)]
    for middleware in reversed(inner):
        app.add_middleware(middleware.cls, *middleware.args, **middleware.kwargs)
    metrics.expose(app)
    for middleware in reversed(outer):
        app.add_middleware(middleware.cls, *middleware.args, **middleware.kwargs)
    app.add_middleware(
        AnonymousCachedReads,
        prefix=API_PREFIX,
        reads=[*ARTICLE_CACHED_READS, *PROFILE_CACHED_READS],
        envelope=lambda answer: _wrapped(answer, envelope),
    )
    app.add_middleware(StripTrailingSlash)
    return app
