"""Walking PromQL ASTs (promql-parser) for the dashboard and rule checks."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import promql_parser

# Grafana variables replaced by sentinels that are easy to recognise in the AST.
JOB, INSTANCE = "__job__", "__instance__"
RATE_INTERVAL = "7m13s"
RATE_INTERVAL_DELTA = timedelta(minutes=7, seconds=13)
COUNTER_FUNCTIONS = {"rate", "irate", "increase"}


def expand(expr: str) -> str:
    return (
        expr.replace("$__rate_interval", RATE_INTERVAL)
        .replace("$instance", INSTANCE)
        .replace("$job", JOB)
    )


def children(node: Any) -> list[Any]:
    kind = type(node).__name__
    if kind == "BinaryExpr":
        return [node.lhs, node.rhs]
    if kind in ("AggregateExpr", "ParenExpr", "UnaryExpr", "SubqueryExpr"):
        found = [node.expr]
        if kind == "AggregateExpr" and node.param is not None:
            found.append(node.param)
        return found
    if kind == "Call":
        return list(node.args)
    if kind == "MatrixSelector":
        return [node.vector_selector]
    return []


def walk(node: Any, parents: tuple[Any, ...] = ()) -> Iterator[tuple[Any, tuple[Any, ...]]]:
    yield node, parents
    for child in children(node):
        yield from walk(child, (*parents, node))


def selectors(expr: str) -> Iterator[tuple[Any, tuple[Any, ...]]]:
    """Every vector selector of the expanded expression, with its ancestors."""
    for node, parents in walk(promql_parser.parse(expand(expr))):
        if type(node).__name__ == "VectorSelector":
            yield node, parents


def matchers(selector: Any) -> dict[str, tuple[str, str]]:
    return {m.name: (str(m.op), m.value) for m in selector.matchers.matchers}


def problems(expr: str) -> list[str]:
    """dashboard-linter's rules for one target, as messages (empty: clean)."""
    found = []
    for selector, parents in selectors(expr):
        name = selector.name or "?"
        labels = matchers(selector)
        if labels.get("job") != ("MatchOp.Re", JOB):
            found.append(f'{name}: no job=~"$job" matcher')
        if labels.get("instance") != ("MatchOp.Re", INSTANCE):
            found.append(f'{name}: no instance=~"$instance" matcher')
        matrix = parents[-1] if parents and type(parents[-1]).__name__ == "MatrixSelector" else None
        if matrix is not None and matrix.range != RATE_INTERVAL_DELTA:
            found.append(f"{name}: range is not $__rate_interval")
        if name.endswith("_total"):
            call = parents[-2] if len(parents) >= 2 else None
            if (
                matrix is None
                or type(call).__name__ != "Call"
                or call.func.name not in COUNTER_FUNCTIONS
            ):
                found.append(f"{name}: a counter outside rate/irate/increase")
    return found
