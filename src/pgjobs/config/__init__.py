"""Configuration files: ``config/queue.yml`` (:mod:`~pgjobs.config.queue`), ``recurring.yml``
(:mod:`~pgjobs.config.recurring`), the schedules they use (cron and natural language), where the
database is (:mod:`~pgjobs.config.settings`), and the YAML reading they share.
"""
