"""The gateway's ASGI app (Litestar) and the service that serves it (uvicorn)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import nats
from litestar import Litestar, MediaType, Request, Response, get
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import State
from litestar.exceptions import HTTPException, ValidationException
from litestar.middleware.session.client_side import CookieBackendConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from litestar.response import Redirect, Template
from litestar.template.config import TemplateConfig
from opentelemetry import trace

from approvals.schemas.codec import encode_error
from approvals.schemas.http import HTTP_STATUS
from approvals.services.gateway import grants, inbox_decisions, passkeys, web
from approvals.services.gateway.api import ApprovalsApi
from approvals.services.gateway.bus import Bus, GatewayError
from approvals.services.gateway.discord import discord_interaction
from approvals.services.gateway.identity import Identity
from approvals.services.gateway.slack import slack_interaction
from approvals.services.runtime import tracing
from approvals.services.runtime.bus import connect_options
from approvals.services.runtime.http import Served
from approvals.services.runtime.signed_links import ConfirmTokens, derive

if TYPE_CHECKING:
    from approvals.services.runtime.settings import Settings

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
API_PREFIX = "/v1/"
# Callers that sign their own requests (API keys, Slack): no session, no CSRF cookie.
NO_SESSION = [f"^{API_PREFIX}", "^/integrations/"]
# HTTP statuses Litestar raises itself, as the error codes of the one error shape.
CODE_OF_STATUS = {400: "invalid", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                  405: "invalid", 413: "too_large", 415: "invalid", 429: "unavailable"}  # fmt: skip


def gateway_secret(settings: Settings) -> bytes:
    if settings.gateway_secret:
        return hashlib.sha256(settings.gateway_secret.encode()).digest()
    log.warning("APPROVALS_GATEWAY_SECRET is not set: sessions and sign-in links end with this "
                "process")  # fmt: skip
    return secrets.token_bytes(32)


def _error_response(
    request: Request[Any, Any, Any],
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    status: int | None = None,
) -> Response[Any] | Template:
    status = status or HTTP_STATUS.get(code, 500)
    wants_page = not request.url.path.startswith(API_PREFIX) and "text/html" in (
        request.headers.get("accept") or ""
    )
    if wants_page:
        page = {"code": code, "message": message}
        return Template("error.html", status_code=status, context=page)
    return Response(content=encode_error(code, message, details), status_code=status,
                    media_type=MediaType.JSON)  # fmt: skip


def on_gateway_error(
    request: Request[Any, Any, Any], error: GatewayError
) -> Response[Any] | Template:
    return _error_response(request, error.code, error.message, error.details)


def on_sign_in_required(request: Request[Any, Any, Any], _: web.SignInRequired) -> Redirect:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return Redirect(f"/sign-in?{urlencode({'next': here})}")


def on_validation(
    request: Request[Any, Any, Any], error: ValidationException
) -> Response[Any] | Template:
    extra = error.extra if isinstance(error.extra, list | dict) else None
    return _error_response(
        request, "invalid", str(error.detail), {"problems": extra} if extra else None
    )


def on_http(request: Request[Any, Any, Any], error: HTTPException) -> Response[Any] | Template:
    code = CODE_OF_STATUS.get(
        error.status_code, "internal" if error.status_code >= 500 else "invalid"
    )
    return _error_response(request, code, str(error.detail), status=error.status_code)


def on_crash(request: Request[Any, Any, Any], error: Exception) -> Response[Any] | Template:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
    return _error_response(request, "internal", "the gateway failed; nothing was done")


@get("/openapi.json", include_in_schema=False, media_type=MediaType.JSON)
async def openapi_json(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return request.app.openapi_schema.to_schema()


@get("/healthz", include_in_schema=False, media_type=MediaType.TEXT)
async def healthz(request: Request[Any, Any, Any]) -> str:
    return "ok" if request.app.state.bus.nc.is_connected else "no bus"


def create_app(settings: Settings) -> Litestar:
    secret = gateway_secret(settings)
    identity = Identity(settings, secret)
    https = settings.web_url.startswith("https://")
    sessions = CookieBackendConfig(secret=derive(secret, "session"), key="approvals_session",
                                   max_age=12 * 3600, secure=https, samesite="lax",
                                   exclude=NO_SESSION)  # fmt: skip
    csrf = CSRFConfig(secret=derive(secret, "csrf").hex(), cookie_name="approvals_csrf",
                      cookie_secure=https, cookie_httponly=True, cookie_samesite="lax",
                      exclude=NO_SESSION)  # fmt: skip

    async def connect(app: Litestar) -> None:
        nc = await nats.connect(settings.nats_servers, max_reconnect_attempts=-1, name="gateway",
                                **connect_options(settings))  # fmt: skip
        app.state.bus = Bus(nc, cache_s=settings.gateway_cache_s)
        await identity.start(nc.jetstream())

    async def disconnect(app: Litestar) -> None:
        bus: Bus | None = getattr(app.state, "bus", None)
        if bus is not None:
            with contextlib.suppress(Exception):
                await bus.nc.drain()

    return Litestar(
        route_handlers=[
            ApprovalsApi,
            openapi_json,
            healthz,
            slack_interaction,
            discord_interaction,
            *web.HANDLERS,
            *inbox_decisions.HANDLERS,
            *grants.HANDLERS,
            *passkeys.HANDLERS,
        ],
        on_startup=[connect],
        on_shutdown=[disconnect],
        middleware=[sessions.middleware],
        # Tracing on: each HTTP request is a server span, continuing the caller's traceparent.
        plugins=[OpenTelemetryPlugin(traced_http())] if tracing.ENABLED else [],
        before_request=route_span if tracing.ENABLED else None,
        csrf_config=csrf,
        template_config=TemplateConfig(directory=TEMPLATES, engine=JinjaTemplateEngine),
        openapi_config=OpenAPIConfig(
            title="Approvals",
            version="1",
            description="A human decision in front of automated actions that spend or write.",
            path="/schema",
            components=Components(
                security_schemes={
                    "apiKey": SecurityScheme(
                        type="http", scheme="bearer", bearer_format="apk_<id>.<secret>"
                    )
                }
            ),
        ),
        exception_handlers={
            GatewayError: on_gateway_error,
            web.SignInRequired: on_sign_in_required,
            ValidationException: on_validation,
            HTTPException: on_http,
            Exception: on_crash,
        },
        request_max_body_size=settings.max_payload_bytes,
        state=State(
            {
                "identity": identity,
                "settings": settings,
                "confirm_tokens": ConfirmTokens.from_settings(settings),
            }
        ),
    )


class GatewayService(Served):
    """``approvals dev`` and ``serve`` run the gateway beside the other services."""

    name = "gateway"

    def __init__(self, settings: Settings, *, port: int | None = None) -> None:
        self.settings = settings
        super().__init__(create_app(settings), settings.gateway_host,
                         settings.gateway_port if port is None else port)  # fmt: skip

    async def stop(self) -> None:
        bus: Bus | None = getattr(self.app.state, "bus", None)
        if bus is not None:
            bus.stopping.set()  # open long polls are answered now, not when they end
        await super().stop()

    async def ready(self) -> bool:
        bus: Bus | None = getattr(self.app.state, "bus", None)
        return self.server.started and bus is not None and bus.nc.is_connected


def traced_http() -> OpenTelemetryConfig:
    """Server spans without inner spans for each ASGI send and receive (``route_span`` names
    them once the route is known)."""
    return OpenTelemetryConfig(exclude_spans=["receive", "send"])


async def route_span(request: Request[Any, Any, Any]) -> None:
    """Name the request's span by its route (``POST /v1/workspaces/{workspace:str}/approvals``),
    not by its path, which holds ids."""
    template = request.scope.get("path_template") or request.url.path
    span = trace.get_current_span()
    span.update_name(f"{request.method} {template}")
    span.set_attribute("http.route", template)
