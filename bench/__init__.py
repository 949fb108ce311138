"""Load benchmark for RealWorld servers: fixture through the public API, wrk for the load."""
