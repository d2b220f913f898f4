"""The ``agora.v1`` API, generated from schemas/proto/agora/v1 by
``python -m schemas.codegen``: edit the protos and regenerate, never these modules."""
