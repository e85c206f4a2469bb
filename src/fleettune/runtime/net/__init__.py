"""A networked deployment: an edge-server process and one process per device, talking gRPC."""
