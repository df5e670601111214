"""Server interceptors: call context (request id, logs, errors), authentication, authorization.

Order matters: `CallContextInterceptor` is first so that it wraps the others and turns every
DomainError they or the servicer raise into the matching status code.
"""

from __future__ import annotations

import inspect
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import structlog

from tdg_core.auth import Principal, TokenVerifier
from tdg_core.errors import DomainError, PermissionDenied, Unavailable
from tdg_core.grpc.context import set_decision, set_principal
from tdg_core.grpc.errors import status_of
from tdg_core.policy import DecisionPath, PolicyClient

log = structlog.get_logger("tdg.grpc")

# Probes and tooling work without a token: health for Kubernetes, reflection for grpcurl.
EXEMPT_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)

Metadata = dict[str, str]
ResourceExtractor = Callable[[str, Any], dict[str, Any] | Awaitable[dict[str, Any]]]
"""(rpc name, request message or None for client streams) → the policy input's `resource`.

May be async, for a service that must look the resource up (e.g. an agreement's publisher); it may
raise a DomainError (NotFound) for a resource that does not exist."""


class _BeforeCallInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Runs `before` ahead of every governed handler, whatever its streaming kind."""

    async def before(
        self, method: str, metadata: Metadata, request: Any, context: grpc.aio.ServicerContext
    ) -> None:
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or method.startswith(EXEMPT_PREFIXES):
            return handler
        metadata: Metadata = {
            k: v for k, v in (details.invocation_metadata or ()) if isinstance(v, str)
        }
        return _wrap(handler, lambda request, ctx: self.before(method, metadata, request, ctx))


def _wrap(
    handler: grpc.RpcMethodHandler,
    before: Callable[[Any, grpc.aio.ServicerContext], Awaitable[None]],
) -> grpc.RpcMethodHandler:
    codec = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        inner_uu = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await before(request, context)
            return await inner_uu(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, **codec)
    if handler.unary_stream:
        inner_us = handler.unary_stream

        async def unary_stream(
            request: Any, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            await before(request, context)
            async for item in inner_us(request, context):
                yield item

        return grpc.unary_stream_rpc_method_handler(unary_stream, **codec)
    if handler.stream_unary:
        inner_su = handler.stream_unary

        async def stream_unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            await before(None, context)
            return await inner_su(requests, context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, **codec)
    inner_ss = handler.stream_stream

    async def stream_stream(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await before(None, context)
        async for item in inner_ss(requests, context):
            yield item

    return grpc.stream_stream_rpc_method_handler(stream_stream, **codec)


class CallContextInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Request id, one log line per call, and DomainError → status code for the whole chain."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or method.startswith("/grpc.health.v1.Health/"):
            return handler
        metadata = dict(details.invocation_metadata or ())
        request_id = str(metadata.get("x-request-id") or uuid.uuid4().hex)

        def start(context: grpc.aio.ServicerContext) -> float:
            structlog.contextvars.clear_contextvars()
            structlog.contextvars.bind_contextvars(request_id=request_id, method=method)
            context.set_trailing_metadata((("x-request-id", request_id),))
            return time.perf_counter()

        async def fail(exc: Exception, context: grpc.aio.ServicerContext, t0: float) -> None:
            code, message = status_of(exc)
            level = "error" if code == grpc.StatusCode.INTERNAL else "info"
            getattr(log, level)(
                "rpc",
                code=code.name,
                error=message,
                duration_ms=round((time.perf_counter() - t0) * 1000, 2),
                exc_info=level == "error",
            )
            await context.abort(code, message)

        def done(t0: float) -> None:
            log.info("rpc", code="OK", duration_ms=round((time.perf_counter() - t0) * 1000, 2))

        codec = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary or handler.stream_unary:
            inner = handler.unary_unary or handler.stream_unary

            async def unary_response(request: Any, context: grpc.aio.ServicerContext) -> Any:
                t0 = start(context)
                try:
                    response = await inner(request, context)
                except (DomainError, Exception) as exc:
                    if _is_abort(exc):
                        raise
                    await fail(exc, context, t0)
                done(t0)
                return response

            factory = (
                grpc.unary_unary_rpc_method_handler
                if handler.unary_unary
                else grpc.stream_unary_rpc_method_handler
            )
            return factory(unary_response, **codec)

        inner_stream = handler.unary_stream or handler.stream_stream

        async def stream_response(
            request: Any, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            t0 = start(context)
            try:
                async for item in inner_stream(request, context):
                    yield item
            except Exception as exc:
                if _is_abort(exc):
                    raise
                await fail(exc, context, t0)
            done(t0)

        factory_s = (
            grpc.unary_stream_rpc_method_handler
            if handler.unary_stream
            else grpc.stream_stream_rpc_method_handler
        )
        return factory_s(stream_response, **codec)


def _is_abort(exc: BaseException) -> bool:
    # context.abort raises this internal exception; it must travel up untouched.
    return type(exc).__name__ == "AbortError"


class AuthenticationInterceptor(_BeforeCallInterceptor):
    """Verifies the bearer token; UNAUTHENTICATED with the reason otherwise."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self._verifier = verifier

    async def before(
        self, method: str, metadata: Metadata, request: Any, context: grpc.aio.ServicerContext
    ) -> None:
        principal = self._verifier.verify(metadata.get("authorization"))
        set_principal(principal)
        structlog.contextvars.bind_contextvars(party=principal.party)


class AuthorizationInterceptor(_BeforeCallInterceptor):
    """Asks OPA `tdg.rpc.decision` for every governed method; fails closed."""

    def __init__(self, policy: PolicyClient, resource_of: ResourceExtractor) -> None:
        self._policy = policy
        self._resource_of = resource_of

    async def before(
        self, method: str, metadata: Metadata, request: Any, context: grpc.aio.ServicerContext
    ) -> None:
        from tdg_core.grpc.context import current_principal

        rpc = method.lstrip("/").partition("/")[2]
        found = self._resource_of(rpc, request)
        resource = await found if inspect.isawaitable(found) else found
        if dataset_id := resource.get("dataset_id"):
            structlog.contextvars.bind_contextvars(dataset=dataset_id)
        decision = await authorize_call(self._policy, method, current_principal(), resource)
        set_decision(decision)


async def authorize_call(
    policy: PolicyClient, method: str, principal: Principal, resource: dict[str, Any]
) -> dict[str, Any]:
    """OPA's `tdg.rpc` decision on a call (`/<package.Service>/<Rpc>`); PermissionDenied with the
    policy's reasons, Unavailable when it gives no answer. Also used by servers that are not
    grpc.aio ones (the query service's Arrow Flight server)."""
    service, _, rpc = method.lstrip("/").partition("/")
    decision = await policy.decide(
        DecisionPath.RPC,
        {
            "method": method,
            "service": service,
            "rpc": rpc,
            "subject": principal.as_policy_input(),
            "resource": resource,
        },
    )
    allow = decision.get("allow")
    if not isinstance(allow, bool):
        raise Unavailable("policy tdg.rpc.decision returned no boolean 'allow'")
    if not allow:
        raise PermissionDenied([str(r) for r in decision.get("reasons", [])])
    return decision
