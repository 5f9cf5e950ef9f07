"""Compatibility alias: earlier releases (and their docs) imported ``logloss.explain``; the code
lives in logloss.insight.explain (see docs/architecture.md)."""

from logloss.insight.explain import (
    Explanation,
    explain,
    format_small,
    render_bars,
)

__all__ = [
    "Explanation",
    "explain",
    "format_small",
    "render_bars",
]
