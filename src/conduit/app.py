"""The application factory: middleware, routers and error handlers; the lifespan owns the
database engine."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from conduit import __version__
from conduit.articles.router import router as articles_router
from conduit.comments.router import router as comments_router
from conduit.platform.db import migrations
from conduit.platform.db.embedded import start_embedded_postgres
from conduit.platform.db.engine import create_engine, create_sessionmaker
from conduit.platform.errors import install_error_handlers
from conduit.platform.middleware import (
    RenderUnexpectedErrors,
    RequireJsonBody,
    StripTrailingSlash,
)
from conduit.platform.settings import Settings, get_settings
from conduit.profiles.router import router as profiles_router
from conduit.users.router import router as users_router

logger = logging.getLogger(__name__)


async def resolve_database_url(settings: Settings) -> str:
    """DATABASE_URL when configured; otherwise the embedded server, started on demand."""
    if settings.database_url is not None:
        return settings.database_url
    url = await start_embedded_postgres(settings.data_dir)
    logger.info("using the embedded PostgreSQL in %s", settings.data_dir.resolve())
    return url


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database_url = await resolve_database_url(settings)
        if settings.should_migrate_on_start:
            await migrations.upgrade(database_url)
        engine = create_engine(settings, database_url)
        app.state.settings = settings
        app.state.jwt_secret = settings.jwt_signing_key()
        app.state.engine = engine
        app.state.sessionmaker = create_sessionmaker(engine)
        try:
            yield
        finally:
            await engine.dispose()

    app = FastAPI(
        title="Conduit",
        version=__version__,
        summary="The RealWorld publishing and social API on async PostgreSQL.",
        lifespan=lifespan,
        redirect_slashes=False,
    )
    app.state.settings = settings

    api = APIRouter(prefix="/api")
    for router in (users_router, profiles_router, articles_router, comments_router):
        api.include_router(router)
    app.include_router(api)
    install_error_handlers(app)

    # Added innermost first: a request meets StripTrailingSlash, CORS, then the rest.
    app.add_middleware(RequireJsonBody)
    app.add_middleware(RenderUnexpectedErrors)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_origin_regex=settings.cors_origin_regex,
        allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "X-Requested-With"],
        max_age=600,
    )
    app.add_middleware(StripTrailingSlash)
    return app
