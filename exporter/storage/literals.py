"""Values written into SQL text, for the statements that go through a transaction pooler
as one simple query (one round trip, an implicit transaction): the relay's publish and
the batch writer's insert."""

from __future__ import annotations


def literal(text: str) -> str:
    """`text` as a PostgreSQL string literal, the way libpq's PQescapeLiteral writes it:
    E'...' with backslashes and quotes doubled, read the same whatever
    standard_conforming_strings says. NUL cannot be in a PostgreSQL string at all."""
    if "\x00" in text:
        raise ValueError("a PostgreSQL string cannot hold NUL")
    return "E'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def text_array(values: list[str] | list[str | None], cast: str) -> str:
    """`ARRAY[...]::cast[]` of string literals (NULL for None)."""
    return f"ARRAY[{', '.join('NULL' if v is None else literal(v) for v in values)}]::{cast}[]"
