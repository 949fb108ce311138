"""The personal feed as a read model: per-follower feed rows written on publication (fan-out on
write), read together with the articles of very followed authors (fan-out on read)."""
