"""Database URLs: one spelling in, the right one out for psycopg and for SQLAlchemy.

pgjobs accepts ``postgresql://``, ``postgres://`` and ``postgresql+psycopg://`` URLs as well as
libpq ``key=value`` strings, and hands each library the spelling it takes.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlencode

from psycopg.conninfo import conninfo_to_dict

_SCHEME = re.compile(r"^(postgres|postgresql)(\+[a-z0-9_]+)?://", re.IGNORECASE)


def is_url(value: str) -> bool:
    return bool(_SCHEME.match(value))


def psycopg_url(url: str) -> str:
    """``postgresql+psycopg://…`` or ``postgres://…`` → ``postgresql://…`` (what libpq takes)."""
    return _SCHEME.sub("postgresql://", url, count=1) if is_url(url) else url


def to_url(conninfo: str, **overrides: str) -> str:
    """Any connection string as a ``postgresql://`` URL, with ``overrides`` (e.g. ``dbname``)."""
    info = {k: str(v) for k, v in conninfo_to_dict(psycopg_url(conninfo)).items()}
    info.update(overrides)
    user, password = info.pop("user", ""), info.pop("password", "")
    host, port, dbname = info.pop("host", ""), info.pop("port", ""), info.pop("dbname", "")
    auth = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
    netloc = auth + "@" if auth else ""
    if host and not host.startswith("/"):
        netloc += host + (f":{port}" if port else "")
    else:
        if host:
            info["host"] = host
        if port:
            info["port"] = port
    query = ("?" + urlencode(info)) if info else ""
    return f"postgresql://{netloc}/{quote(dbname, safe='')}{query}"


def sqlalchemy_url(url: str) -> str:
    """Any PostgreSQL URL or conninfo → ``postgresql+psycopg://…`` (SQLAlchemy, psycopg 3)."""
    return _SCHEME.sub("postgresql+psycopg://", url if is_url(url) else to_url(url), count=1)


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``, for logs and error messages."""
    url = re.sub(r"(://[^:/@?]*:)[^@/?]*@", r"\1***@", url)
    return re.sub(r"(password=)\S+", r"\1***", url)
