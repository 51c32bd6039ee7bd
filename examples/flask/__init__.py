"""A Flask application that enqueues a job in the transaction of the row it is about."""
