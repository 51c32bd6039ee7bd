"""Enqueueing: ``perform_later`` (one job: :mod:`~pgjobs.enqueue.core`), bulk
``perform_all_later``, jobs with concurrency limits or unique keys (:mod:`~pgjobs.enqueue.keyed`),
and the handle an enqueue returns (:mod:`~pgjobs.enqueue.handle`).  Never imports the engine.
"""
