"""A stock grpcio client, with its default channel options, against the daemon's Unix socket.

Usage: grpc_client.py unix:/path/to/edge.sock

Prints one JSON object: the health status, the services reflection (v1alpha, what grpcio's
reflection package speaks) lists, and edge.v1.Control/GetStatus called with message classes
built from the descriptors reflection returned, as a generic client would.
"""
import json
import sys

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc


def reflect(stub, **request):
    replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(**request)]), timeout=5)
    return next(iter(replies))


def main(target):
    channel = grpc.insecure_channel(target)
    out = {}
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    out["health"] = health_pb2.HealthCheckResponse.ServingStatus.Name(health.status)
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    listed = reflect(stub, list_services="")
    out["services"] = sorted(s.name for s in listed.list_services_response.service)
    files = reflect(stub, file_containing_symbol="edge.v1.Control").file_descriptor_response
    pool = descriptor_pool.DescriptorPool()
    for raw in files.file_descriptor_proto:
        pool.Add(descriptor_pb2.FileDescriptorProto.FromString(raw))
    request_class = message_factory.GetMessageClass(pool.FindMessageTypeByName("edge.v1.GetStatusRequest"))
    response_class = message_factory.GetMessageClass(pool.FindMessageTypeByName("edge.v1.GetStatusResponse"))
    get_status = channel.unary_unary(
        "/edge.v1.Control/GetStatus",
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    status = get_status(request_class(), timeout=5)
    out["status"] = {"ready": status.ready, "mode": status.mode, "interfaces": [i.name for i in status.interfaces]}
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
