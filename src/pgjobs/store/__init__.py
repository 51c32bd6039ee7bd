"""One module per table: each owns the statements that touch its table (templates with
``{jobs}``, ``{ready}``, … filled per schema by :func:`pgjobs.db.names.sql`)."""
