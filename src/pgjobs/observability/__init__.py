"""What lets operators watch pgjobs with their own tools: the running job's identity in every
log record (:mod:`pgjobs.observability.logging_context`)."""
