"""Webhooks: users register endpoints for domain events; deliveries are signed, retried with
backoff behind a circuit breaker per destination, and logged."""
