"""Compatibility alias: earlier releases (and their docs) imported ``logloss.report``; the code
lives in logloss.insight.report (see docs/architecture.md)."""

from logloss.insight.report import (
    Report,
    build_report,
    write_report,
)

__all__ = [
    "Report",
    "build_report",
    "write_report",
]
