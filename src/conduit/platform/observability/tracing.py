"""OpenTelemetry traces of HTTP requests, SQL statements and Redis commands.

With OTEL_EXPORTER_OTLP_ENDPOINT set, spans are batched and exported over OTLP/HTTP; the
standard variables (OTEL_EXPORTER_OTLP_HEADERS, OTEL_TRACES_SAMPLER, OTEL_RESOURCE_ATTRIBUTES...)
keep their meaning. Unset, nothing is instrumented: no span, no context, no cost per request.

HTTP spans come from FastAPI's own instrumentation (`FastAPI(telemetry=...)`), named by route
template. SQL spans come from SQLAlchemy's engine events (`engine.sync_engine`); asyncpg is
deliberately not instrumented as well, which would record every statement twice.
"""

from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

from fastapi.telemetry import TelemetryConfig
from opentelemetry import trace
from opentelemetry.metrics import NoOpUpDownCounter
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from sqlalchemy.ext.asyncio import AsyncEngine

from conduit import __version__
from conduit.platform.settings import Settings

_NOT_TRACED: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "auto_configure": False,
}


def create_span_exporter(settings: Settings) -> SpanExporter:
    # Imported here, like the instrumentations below: a process that does not trace never
    # loads them.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    endpoint = (settings.otel_exporter_otlp_endpoint or "").rstrip("/")
    # The generic endpoint names the collector; each signal has its own path under it.
    return OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")


def create_tracer_provider(settings: Settings) -> TracerProvider | None:
    """A provider exporting to the configured collector, or None when tracing is off."""
    if settings.otel_exporter_otlp_endpoint is None:
        return None
    resource = Resource.create(
        {
            SERVICE_NAME: settings.otel_service_name,
            SERVICE_VERSION: __version__,
            "deployment.environment.name": settings.environment.value,
        }
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(create_span_exporter(settings)))
    # Libraries that trace through the global provider (job queues, HTTP clients) join in.
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)
    # Jobs carry the trace of the request that queued them, and their runs are spans in it.
    from pgqueuer.adapters.tracing.opentelemetry import OpenTelemetryTracing
    from pgqueuer.ports.tracing import set_tracing_class

    set_tracing_class(OpenTelemetryTracing(provider.get_tracer("conduit.jobs")))
    return provider


def _is_operations_request(scope: MutableMapping[str, Any]) -> bool:
    path = str(scope.get("path", "")).rstrip("/")
    return path == "/metrics" or path.startswith("/health/")


def fastapi_telemetry(provider: TracerProvider | None) -> TelemetryConfig:
    """FastAPI's `telemetry` option: HTTP spans only (metrics are Prometheus'), probes left out."""
    if provider is None:
        return _NOT_TRACED
    return {
        **_NOT_TRACED,
        "tracing": True,
        "tracer_provider": provider,
        "exclude": _is_operations_request,
    }


def instrument_engine(engine: AsyncEngine, provider: TracerProvider) -> None:
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.instrumentation.sqlalchemy.version import (
        __version__ as sqlalchemy_instrumentation,
    )

    tracer = trace.get_tracer(
        "opentelemetry.instrumentation.sqlalchemy",
        sqlalchemy_instrumentation,
        tracer_provider=provider,
    )
    # Pool usage is already a Prometheus gauge; the instrumentation's own metric is not wanted.
    unused = NoOpUpDownCounter("db.client.connections.usage")
    trace_statements: Any = EngineTracer
    trace_statements(tracer, engine.sync_engine, unused, enable_commenter=False)


def instrument_redis(provider: TracerProvider) -> None:
    """Trace every Redis client's commands, whichever module creates the client and when."""
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    RedisInstrumentor().instrument(tracer_provider=provider)


def uninstrument_redis() -> None:
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    RedisInstrumentor().uninstrument()


@contextmanager
def untraced() -> Iterator[None]:
    """Leave out the spans of what runs inside, such as the queries of health probes."""
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    with suppress_instrumentation():
        yield
