"""Database access: the schema (the one DDL source), URLs, migrations and the embedded server."""
