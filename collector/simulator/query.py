"""ONTAP collection query semantics, pure: `fields`, filters, `order_by` and paging.

Paging uses a cursor token that the next link carries as `start.cursor`. The token holds
the page number of the walk (so faults can target "page 3") and where the walk is: the
last key served when records are in key order, so logins and logouts between pages never
shift the other records; an offset when `order_by` sorts by something else.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import orjson

Record = dict[str, Any]
Key = tuple[Any, ...]
# A projection tree: field name -> subtree; an empty subtree means "everything below".
Tree = dict[str, "Tree"]

START_PARAM = "start.cursor"
RESERVED = frozenset(
    {"fields", "max_records", "return_records", "return_timeout", "order_by", START_PARAM}
)
DEFAULT_MAX_RECORDS = 10_000


class QueryError(Exception):
    """A request ONTAP would refuse with 400; `code` is ONTAP's error code (a string)."""

    def __init__(self, message: str, code: str, target: str) -> None:
        super().__init__(message)
        self.message, self.code, self.target = message, code, target


# ---- fields --------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldSelection:
    """What to return of each record. `canonical` names it for caching rendered records."""

    tree: Tree
    canonical: str


def parse_fields(
    raw: str | None, known: frozenset[str], default_fields: Sequence[str]
) -> FieldSelection:
    if raw is None:
        return FieldSelection(_tree(default_fields), "")
    names = sorted({name.strip() for name in raw.split(",") if name.strip()})
    if "*" in names or "**" in names:
        # Nothing the simulator serves is "expensive", so * and ** return the same.
        return FieldSelection({}, "**")
    for name in names:
        if name not in known:
            raise QueryError(f'Unknown field "{name}" in "fields".', "2", name)
    return FieldSelection(_tree([*default_fields, *names]), ",".join(names))


def _tree(paths: Iterable[str]) -> Tree:
    root: Tree = {}
    whole: set[tuple[str, ...]] = set()
    for path in sorted(paths, key=lambda p: p.count(".")):
        parts = tuple(path.split("."))
        if any(parts[:i] in whole for i in range(1, len(parts))):
            continue  # a parent was asked for whole
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = {}
        whole.add(parts)
    return root


def project(value: Any, tree: Tree, hal: bool) -> Any:
    """Keep the selected fields; keep `_links` only for HAL clients."""
    if isinstance(value, list):
        return [project(item, tree, hal) for item in value]
    if not isinstance(value, dict):
        return value
    if not tree:
        return value if hal else strip_links(value)
    return {
        k: (v if k == "_links" else project(v, tree[k], hal))
        for k, v in value.items()
        if k in tree or (hal and k == "_links")
    }


def strip_links(value: Any) -> Any:
    if isinstance(value, list):
        return [strip_links(item) for item in value]
    if isinstance(value, dict):
        return {k: strip_links(v) for k, v in value.items() if k != "_links"}
    return value


# ---- filters -------------------------------------------------------------------------


def values_at(record: Record, path: Sequence[str]) -> list[Any]:
    """Every value at a dotted path, descending through lists; [None] where it is absent."""
    current: list[Any] = [record]
    for part in path:
        step: list[Any] = []
        for item in current:
            if isinstance(item, list):
                step.extend(i.get(part) if isinstance(i, dict) else None for i in item)
            elif isinstance(item, dict):
                step.append(item.get(part))
            else:
                step.append(None)
        current = step
    flat: list[Any] = []
    for item in current:
        flat.extend(item if isinstance(item, list) else [item])
    return flat or [None]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class Alternative:
    """One `|`-separated part of a filter value, e.g. `!iqn.1994*`, `>=3`, `null`."""

    negated: bool
    test: Callable[[Any], bool]

    def matches(self, values: list[Any]) -> bool:
        hit = any(self.test(v) for v in values)
        return not hit if self.negated else hit


_OPERATORS: tuple[tuple[str, Callable[[Any, Any], bool]], ...] = (
    ("<=", lambda a, b: a <= b),
    (">=", lambda a, b: a >= b),
    ("<", lambda a, b: a < b),
    (">", lambda a, b: a > b),
)


def _comparison(op: Callable[[Any, Any], bool], operand: str) -> Callable[[Any], bool]:
    number = _number(operand)

    def test(value: Any) -> bool:
        if value is None:
            return False
        if number is not None and isinstance(value, int | float) and not isinstance(value, bool):
            return op(value, number)
        return op(_text(value).lower(), operand.lower())

    return test


def _pattern(text: str) -> Callable[[Any], bool]:
    regex = re.compile(".*".join(re.escape(p) for p in text.split("*")), re.IGNORECASE)
    return lambda value: value is not None and regex.fullmatch(_text(value)) is not None


def parse_alternative(text: str) -> Alternative:
    negated = text.startswith("!")
    body = text[1:] if negated else text
    if body == "null":
        return Alternative(negated, lambda value: value is None)
    for symbol, op in _OPERATORS:
        if body.startswith(symbol):
            return Alternative(negated, _comparison(op, body[len(symbol) :]))
    return Alternative(negated, _pattern(body))


@dataclass(frozen=True)
class Filter:
    path: tuple[str, ...]
    alternatives: tuple[Alternative, ...]

    def matches(self, record: Record) -> bool:
        values = values_at(record, self.path)
        return any(alt.matches(values) for alt in self.alternatives)


def parse_filter(name: str, raw: str, known: frozenset[str]) -> Filter:
    if name not in known:
        raise QueryError(f'Unknown field "{name}".', "2", name)
    return Filter(tuple(name.split(".")), tuple(parse_alternative(a) for a in raw.split("|")))


# ---- order_by ------------------------------------------------------------------------


@dataclass(frozen=True)
class Ordering:
    path: tuple[str, ...]
    descending: bool


def parse_order_by(raw: str, known: frozenset[str]) -> tuple[Ordering, ...]:
    out: list[Ordering] = []
    for part in raw.split(","):
        words = part.split()
        if not words or len(words) > 2 or (len(words) == 2 and words[1] not in ("asc", "desc")):
            raise QueryError(f'Invalid order_by "{raw}".', "2", "order_by")
        if words[0] not in known:
            raise QueryError(f'Unknown field "{words[0]}" in "order_by".', "2", words[0])
        out.append(Ordering(tuple(words[0].split(".")), len(words) == 2 and words[1] == "desc"))
    return tuple(out)


def order_records(entries: list[tuple[Key, Record]], orderings: Sequence[Ordering]) -> list[Key]:
    """Sort by each ordering (stable, so ties keep key order); missing values sort first."""
    ordered = sorted(entries, key=lambda e: e[0])
    for ordering in reversed(orderings):
        ordered.sort(
            key=lambda e: _sort_value(values_at(e[1], ordering.path)[0]),
            reverse=ordering.descending,
        )
    return [key for key, _ in ordered]


def _sort_value(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, "")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (1, value)
    return (2, _text(value).lower())


# ---- cursor --------------------------------------------------------------------------


@dataclass(frozen=True)
class Cursor:
    """Where a walk is: the page about to be served and the key (or offset) before it."""

    page: int = 1
    after: Key | None = None
    offset: int = 0

    def encode(self) -> str:
        raw = orjson.dumps([self.page, list(self.after) if self.after else None, self.offset])
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            page, after, offset = orjson.loads(raw)
            return cls(int(page), tuple(after) if after else None, int(offset))
        except (binascii.Error, ValueError, TypeError, orjson.JSONDecodeError) as exc:
            raise QueryError("Invalid start.cursor.", "2", START_PARAM) from exc


def page_number(params: Sequence[tuple[str, str]]) -> int:
    """The page of the walk a request asks for, without validating anything else."""
    for name, value in params:
        if name == START_PARAM:
            try:
                return Cursor.decode(value).page
            except QueryError:
                return 1
    return 1


# ---- the whole query -----------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    fields: FieldSelection
    filters: tuple[Filter, ...] = ()
    orderings: tuple[Ordering, ...] = ()
    max_records: int = DEFAULT_MAX_RECORDS
    return_records: bool = True
    return_timeout: int = 15
    cursor: Cursor = field(default_factory=Cursor)


def _int_param(name: str, raw: str, low: int, high: int) -> int:
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise QueryError(f'Invalid value "{raw}" for "{name}".', "2", name)
    return int(raw)


def parse_query(
    params: Sequence[tuple[str, str]], known: frozenset[str], default_fields: Sequence[str]
) -> Query:
    """Turn query parameters into a `Query`, or raise `QueryError` as ONTAP would."""
    options = {name: value for name, value in params if name in RESERVED}
    return_records = options.get("return_records", "true").lower()
    if return_records not in ("true", "false"):
        raise QueryError(f'Invalid value "{return_records}".', "2", "return_records")
    return Query(
        fields=parse_fields(options.get("fields"), known, default_fields),
        filters=tuple(
            parse_filter(name, value, known) for name, value in params if name not in RESERVED
        ),
        orderings=parse_order_by(options["order_by"], known) if "order_by" in options else (),
        max_records=_int_param("max_records", options.get("max_records", "10000"), 1, 10**7),
        return_records=return_records == "true",
        return_timeout=_int_param("return_timeout", options.get("return_timeout", "15"), 0, 120),
        cursor=Cursor.decode(options[START_PARAM]) if START_PARAM in options else Cursor(),
    )


def next_href(path: str, params: Sequence[tuple[str, str]], cursor: Cursor) -> str:
    """The original query with the cursor in front: opaque to clients, complete by itself."""
    kept = [(name, value) for name, value in params if name != START_PARAM]
    return f"{path}?{urlencode([(START_PARAM, cursor.encode()), *kept], safe=',*')}"


# ---- choosing a page -----------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    keys: list[Key]
    next_cursor: Cursor | None
    previous_key: Key | None  # the record just before this page, for the repeat fault


def key_order_page(
    keys: Sequence[Key],
    cursor: Cursor,
    limit: int,
    accept: Callable[[Key], bool] | None,
) -> Page:
    """Up to `limit` accepted keys after the cursor's key; a next link if any key remains."""
    start = bisect.bisect_right(keys, cursor.after) if cursor.after is not None else 0
    chosen: list[Key] = []
    position = start
    while position < len(keys) and len(chosen) < limit:
        key = keys[position]
        position += 1
        if accept is None or accept(key):
            chosen.append(key)
    previous = keys[start - 1] if start > 0 else None
    if position >= len(keys) or not chosen:
        return Page(chosen, None, previous)
    return Page(chosen, Cursor(cursor.page + 1, tuple(chosen[-1])), previous)


def offset_page(ordered: Sequence[Key], cursor: Cursor, limit: int) -> Page:
    """A page of an `order_by` walk; offsets may repeat or skip records that move meanwhile."""
    start = cursor.offset
    chosen = list(ordered[start : start + limit])
    previous = ordered[start - 1] if 0 < start <= len(ordered) else None
    end = start + len(chosen)
    if end >= len(ordered):
        return Page(chosen, None, previous)
    return Page(chosen, Cursor(cursor.page + 1, None, end), previous)
