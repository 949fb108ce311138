"""Conduit: a production-grade async backend for the RealWorld publishing and social API."""

__version__ = "0.1.0"
