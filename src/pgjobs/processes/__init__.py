"""pgjobs' processes: supervisor, workers, dispatchers (and the scheduler)."""
