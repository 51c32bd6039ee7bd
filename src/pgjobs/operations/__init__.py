"""What operators and applications do to jobs and queues, shared by the API, the CLI and the
dashboard: failed jobs, waiting jobs, job results and cancellation, queues (pause, resume),
retention, recurring tasks, and unblocking concurrency keys.
"""
