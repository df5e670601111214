"""gRPC server bootstrap and interceptors shared by every tdg service."""

from tdg_core.grpc.context import current_decision, current_principal
from tdg_core.grpc.interceptors import ResourceExtractor
from tdg_core.grpc.server import GrpcEndpoint, GrpcService, build_server

__all__ = [
    "GrpcEndpoint",
    "GrpcService",
    "ResourceExtractor",
    "build_server",
    "current_decision",
    "current_principal",
]
