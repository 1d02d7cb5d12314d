"""grpcio-tools output for oip_v2.proto; regenerate with scripts/gen_proto.py, never edit."""
