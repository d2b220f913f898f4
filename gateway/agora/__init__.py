"""Generated gRPC code of the gateway's proto packages (see gateway/codegen.py)."""
