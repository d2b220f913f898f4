"""The ``agora.v1`` API, generated from gateway/proto/agora/v1 by
``python -m gateway.codegen``: edit the protos and regenerate, never these modules."""
