"""Reading pgjobs' YAML files (``config/queue.yml``, ``config/recurring.yml``) with line numbers.

Files become :class:`YamlMap` / :class:`YamlList` values that remember the line of each key and
item, so that :class:`Problems` read ``config/queue.yml:12: workers[0].thread: unknown key; did you
mean 'threads'?``. Sections, merge keys and ``${VAR:-default}``: see ``docs/configuration.md``.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from pgjobs.errors import ConfigurationError

T = TypeVar("T")

_STR_TAG, _NULL_TAG, _MERGE_TAG = (f"tag:yaml.org,2002:{t}" for t in ("str", "null", "merge"))
_TYPED = {f"tag:yaml.org,2002:{t}" for t in ("null", "bool", "int", "float")}  # after ${...}
_VARIABLE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{[^}]*\}?")


class YamlMap(dict[str, Any]):
    """A mapping read from YAML; ``lines[key]`` is the line of the key, ``line`` of the mapping."""

    def __init__(self, line: int | None = None) -> None:
        super().__init__()
        self.line = line
        self.lines: dict[str, int] = {}


class YamlList(list[Any]):
    """A sequence read from YAML; ``lines[i]`` is the line of item ``i``, ``line`` of the list."""

    def __init__(self, line: int | None = None) -> None:
        super().__init__()
        self.line = line
        self.lines: list[int] = []


class Problems:
    """Collects configuration problems; :meth:`raise_if_any` raises them all at once."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        self._items: list[tuple[int, str]] = []

    def add(self, message: str, *, line: int | None = None, where: str | None = None) -> None:
        """Record ``path:line: where: message`` (parts that are unknown are left out)."""
        text = f"{where}: {message}" if where else message
        if self.path is not None:
            text = f"{self.path}:{'' if line is None else f'{line}:'} {text}"
        self._items.append((line or 0, text))

    @property
    def messages(self) -> list[str]:
        """The messages, ordered by line (problems without a line first)."""
        return [text for _, text in sorted(self._items, key=lambda item: item[0])]

    def __len__(self) -> int:
        return len(self._items)

    def check_keys(self, mapping: Mapping[str, Any], allowed: Collection[str], where: str) -> None:
        """Report each key of ``mapping`` not in ``allowed``, with a did-you-mean suggestion."""
        for key in mapping:
            if key not in allowed:
                hint = did_you_mean(key, allowed) or "expected one of: " + ", ".join(
                    sorted(allowed)
                )
                self.add(f"unknown key; {hint}", line=line_of(mapping, key), where=join(where, key))

    def take(
        self,
        mapping: Mapping[str, Any],
        key: str,
        convert: Callable[[Any], T],
        default: T,
        where: str,
    ) -> T:
        """``convert(mapping[key])``; ``default`` if missing, null or invalid (``convert`` raises
        ValueError("must be ..."), recorded here with the key's line)."""
        if mapping.get(key) is None:
            return default
        try:
            return convert(mapping[key])
        except ValueError as exc:
            self.add(str(exc), line=line_of(mapping, key), where=join(where, key))
            return default

    def raise_if_any(self) -> None:
        if self._items:
            raise ConfigurationError(problems=self.messages)


def did_you_mean(word: str, choices: Collection[str]) -> str:
    """``"did you mean 'threads'?"`` for the choice closest to ``word``; ``""`` if none is close."""
    by_lower = {choice.lower(): choice for choice in choices}
    matches = [c for c in by_lower if len(word) > 2 and c.startswith(word.lower())]  # "prod"
    if len(matches) != 1:
        matches = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return f"did you mean {by_lower[matches[0]]!r}?" if matches else ""


def join(where: str, key: str | int) -> str:
    """The path of ``key`` inside ``where``: ``workers[0].threads``."""
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


def line_of(container: object, key: str | int) -> int | None:
    """The line of ``key`` in a :class:`YamlMap` / :class:`YamlList` (``None`` for plain values)."""
    if isinstance(container, YamlMap) and isinstance(key, str) and key in container.lines:
        return container.lines[key]
    if isinstance(container, YamlList) and isinstance(key, int) and key < len(container.lines):
        return container.lines[key]
    return getattr(container, "line", None)


def describe(value: object) -> str:
    """A value as the user wrote it, for messages."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, Mapping | list):
        return "a mapping" if isinstance(value, Mapping) else "a list"
    return repr(value)


def interpolate(text: str, environ: Mapping[str, str]) -> str:
    """Replace ``${VAR}``, ``${VAR:-default}`` (default if unset or empty) and ``$${`` (``${``).

    Raises ``ValueError`` naming every unset variable and malformed reference."""
    errors: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if match.group(0) == "$${":
            return "${"
        if name is None:
            bad = match.group(0)
            errors.append(f"bad variable reference {bad!r}; write ${{NAME}} or ${{NAME:-default}}")
        elif default is not None:
            return environ.get(name) or default
        elif name not in environ:
            hint = f"write ${{{name}:-default}} to give a default"
            errors.append(f"environment variable {name} is not set ({hint})")
        else:
            return environ[name]
        return ""

    result = _VARIABLE.sub(replace, text)
    if errors:
        raise ValueError("; ".join(errors))
    return result


def resolve_env(env: str | None, environ: Mapping[str, str]) -> str:
    """The environment to use: ``env``, else ``PGJOBS_ENV``, else ``"development"``."""
    return env or environ.get("PGJOBS_ENV") or "development"


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _yaml_error(exc: yaml.YAMLError, problems: Problems) -> None:
    if not isinstance(exc, yaml.MarkedYAMLError):
        problems.add(f"invalid YAML: {exc}")
        return
    message = exc.problem or exc.context or "syntax error"
    if exc.problem and exc.context:
        at = f" on line {exc.context_mark.line + 1}" if exc.context_mark else ""
        message += f" ({exc.context}{at})"
    if "'\\t'" in message:
        message += "; indent with spaces, not tabs"
    if exc.context == "while scanning an alias":
        message += '; quote values that start with "*", as in queues: "*"'
    mark = exc.problem_mark or exc.context_mark
    problems.add(f"invalid YAML: {message}", line=mark.line + 1 if mark else None)


class _Converter:
    """Turns nodes into YamlMap / YamlList / scalars, interpolating string scalars."""

    def __init__(
        self, loader: yaml.SafeLoader, environ: Mapping[str, str], problems: Problems
    ) -> None:
        self.loader, self.environ, self.problems = loader, environ, problems
        self.done: dict[int, Any] = {}  # aliased nodes are converted once

    def convert(self, node: yaml.Node, where: str) -> Any:
        if id(node) not in self.done:
            self.done[id(node)] = None  # a recursive alias ends up as null
            try:
                self.done[id(node)] = self._convert(node, where)
            except yaml.MarkedYAMLError as exc:
                _yaml_error(exc, self.problems)
        return self.done[id(node)]

    def _convert(self, node: Any, where: str) -> Any:
        if isinstance(node, yaml.MappingNode):
            self.loader.flatten_mapping(node)
            mapping = YamlMap(_line(node))
            for key_node, value_node in node.value:
                key = self.loader.construct_object(key_node)
                if not isinstance(key, str):
                    message = f"key {describe(key)} is not a string"
                    self.problems.add(message, line=_line(key_node), where=where)
                    continue
                mapping[key] = self.convert(value_node, join(where, key))
                mapping.lines[key] = _line(key_node)
            return mapping
        if isinstance(node, yaml.SequenceNode):
            items = YamlList(_line(node))
            for index, item in enumerate(node.value):
                items.append(self.convert(item, join(where, index)))
                items.lines.append(_line(item))
            return items
        value = self.loader.construct_object(node)
        if node.tag != _STR_TAG or not isinstance(value, str) or "${" not in value:
            return value
        try:
            text = interpolate(value, self.environ)
        except ValueError as exc:
            self.problems.add(str(exc), line=_line(node), where=where)
            return None
        tag = self.loader.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
        if node.style is not None or tag not in _TYPED:  # quoted: stays a string; plain: typed
            return text
        return self.loader.construct_object(yaml.ScalarNode(tag, text, node.start_mark, None))


def load_settings(
    path: str | Path,
    *,
    known_keys: Collection[str],
    problems: Problems,
    env: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> YamlMap:
    """The settings in ``path`` for ``env``; a file with none of ``known_keys`` (the setting
    names) at the top level, and only mappings there, is made of environment sections."""
    environ = os.environ if environ is None else environ
    env = resolve_env(env, environ)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.add(f"cannot read the file: {exc}")
        return YamlMap()
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return YamlMap()
        if not isinstance(root, yaml.MappingNode):
            problems.add("the top level must be a mapping of settings", line=_line(root))
            return YamlMap()
        loader.flatten_mapping(root)
        pairs = [(loader.construct_object(k), v) for k, v in root.value if k.tag != _MERGE_TAG]
        sections = {key: node for key, node in pairs if isinstance(key, str)}
        node: yaml.Node = root
        sectioned = all(isinstance(n, yaml.MappingNode) or n.tag == _NULL_TAG for _, n in pairs)
        if env not in sections and any(did_you_mean(key, known_keys) for key in sections):
            sectioned = False  # a flat file with misspelt keys: report those instead
        if pairs and sectioned and not set(sections) & set(known_keys):
            if env not in sections:
                hint = did_you_mean(env, sections)
                problems.add(
                    f"no section for environment {env!r}{'; ' + hint if hint else ''} "
                    f"(sections: {', '.join(sections)}; select one with PGJOBS_ENV)"
                )
                return YamlMap()
            node = sections[env]
        settings = _Converter(loader, environ, problems).convert(node, "")
        return settings if isinstance(settings, YamlMap) else YamlMap(_line(node))
    except yaml.YAMLError as exc:
        _yaml_error(exc, problems)
        return YamlMap()
    finally:
        loader.dispose()
