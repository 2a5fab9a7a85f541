"""The container runtime over CRI: the client (`client`), runtime endpoint
discovery (`endpoints` pure, `runtime` I/O), and pod/container enrichment
(`container` pure, `enrich` with its cache).

The gRPC stubs `api_pb2*` are generated from `api.proto` by `make proto`.
"""
