"""In-app notifications: persisted per user, listed and marked read through the API, and
streamed live (server-sent events) as they are created."""
