"""Watching pgjobs: the running job in log records (:mod:`.logging_context`, core), Prometheus
metrics (:mod:`.metrics`, ``pgjobs[metrics]``) and OpenTelemetry traces (:mod:`.otel` on the hook
of :mod:`.tracing`, ``pgjobs[otel]``).  The core imports only the logging context and the tracing
hook; the extras' modules are imported by whoever turns them on."""
