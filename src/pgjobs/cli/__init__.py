"""The ``pgjobs`` command line: :func:`pgjobs.cli.main.main`, one module per command group
(parsing and printing only; the work is done by :mod:`pgjobs.operations` and the engine).
"""
