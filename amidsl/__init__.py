"""amidsl: build S3-backed (instance-store) AMIs from a running Linux node, with reviewable plans."""

__version__ = "0.1.0"
