"""Logs, metrics and traces: what an operator needs to see the service from the outside."""
