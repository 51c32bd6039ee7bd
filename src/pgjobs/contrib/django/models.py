"""No Django models: pgjobs' tables belong to pgjobs' own migrations (see ``db.migrate_tables``).

The module exists so that ``manage.py migrate`` sends this app its post_migrate signal.
"""
