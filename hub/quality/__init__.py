"""Data quality rules declared in the catalogue and applied to every record in the hot path (docs/quality.md)."""

from hub.quality.rules import (
    NO_RULES,
    QUALITY_RULES,
    RULES,
    Checker,
    KeyExists,
    RuleError,
    Today,
    Violation,
    area_code_known,
    compile_checker,
    compile_rules,
    fields_read,
    resident_id_problem,
    rule_problems,
)

__all__ = [
    "NO_RULES", "QUALITY_RULES", "RULES", "Checker", "KeyExists", "RuleError", "Today", "Violation",
    "area_code_known", "compile_checker", "compile_rules", "fields_read", "resident_id_problem", "rule_problems",
]
