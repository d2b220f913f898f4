"""Generated gRPC code of the gateway's proto packages (see schemas/codegen.py)."""
