"""gRPC server bootstrap and interceptors shared by every tdg service."""

from tdg_core.grpc.context import current_decision, current_principal
from tdg_core.grpc.interceptors import ResourceExtractor
from tdg_core.grpc.server import GrpcService, build_server, serve

__all__ = [
    "GrpcService",
    "ResourceExtractor",
    "build_server",
    "current_decision",
    "current_principal",
    "serve",
]
