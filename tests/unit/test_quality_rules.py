"""Every quality rule on valid and invalid values, compiled as the hot path compiles them (hub.quality)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from hub.catalogue.model import QualityRule, Resource
from hub.quality import (
    NO_RULES,
    RULES,
    RuleError,
    Today,
    Violation,
    area_code_known,
    compile_checker,
    compile_rules,
    resident_id_problem,
    rule_problems,
)

TODAY = date(2026, 12, 7)


def check(rule: str, value: Any, args: dict[str, Any] | None = None, field: str = "f",
          record: dict[str, Any] | None = None, **kwargs: Any) -> list[Violation]:
    checker = compile_checker([QualityRule(field=field, rule=rule, args=args or {})], today=lambda: TODAY, **kwargs)
    return checker({field: value, **(record or {})})


def ok(rule: str, value: Any, args: dict[str, Any] | None = None, **kwargs: Any) -> bool:
    return not check(rule, value, args, **kwargs)


CASES: list[tuple[str, dict[str, Any], list[Any], list[Any]]] = [
    # rule, args, valid values, invalid values
    ("required", {}, ["x", 0, False, " a "], [None, "", "   "]),
    ("regex", {"pattern": r"^F(2[0-9]|3[01])(\.[0-9])?$"}, ["F20", "F31.2", None], ["F32", "f20", 20, "F20x"]),
    ("enum", {"values": ["M", "F"]}, ["M", "F", None], ["m", "X", ""]),
    ("range", {"min": 1, "max": 10}, [1, 10, 5.5, None], [0, 11, -1, "one", True]),
    ("range", {"min": 0}, [0, 10**9], [-0.01]),
    ("date_range", {"min": "2000-01-01", "max": "2026-12-31"},
     [date(2000, 1, 1), date(2026, 12, 31), "2010-05-05", datetime(2020, 1, 1, tzinfo=UTC), None],
     [date(1999, 12, 31), "2027-01-01", "not a date", 3.5]),
    ("not_future", {}, [TODAY, date(1990, 1, 1), "2026-12-07", None], [date(2026, 12, 8), "2030-01-01", "soon"]),
    ("resident_id", {},
     ["11010519491231002X", "11010519491231002x", "310115198807061234", "310103195001011239", None],
     ["11010519491231002Y", "1101051949123100", "110105194913310021", "999999194912310025", "310199194912310027",
      "110105203012310026", 11010519491231002]),
    ("uscc", {}, ["91310115MAQ283FQ6R", None], ["91310115MAQ283FQ6X", "91310115MAQ283FQ6", "O1310115MAQ283FQ6R"]),
    ("district_code", {}, ["310115", "310151", None], ["310103", "310000", 310115, ""]),
]


@pytest.mark.parametrize(("rule", "args", "valid", "invalid"), CASES, ids=[c[0] for c in CASES])
def test_rule_valid_and_invalid(rule: str, args: dict[str, Any], valid: list[Any], invalid: list[Any]) -> None:
    for value in valid:
        assert ok(rule, value, args), f"{rule} {args} should accept {value!r}: {check(rule, value, args)}"
    for value in invalid:
        failed = check(rule, value, args)
        assert len(failed) == 1 and failed[0].rule == rule and failed[0].field == "f", (rule, value)
        assert failed[0].message


def test_every_rule_is_tested() -> None:
    tested = {c[0] for c in CASES} | {"district_matches_resident_id", "after", "reference"}
    assert tested == set(RULES)


def test_doc_vectors() -> None:
    """docs/domain.md: 11010519491231002X is valid; the Pudong masking example is a valid Pudong number although
    the person was born (1988) before Pudong's code existed (1992): stdnum's ric would reject it."""
    assert resident_id_problem("11010519491231002X", TODAY) is None
    assert resident_id_problem("310115198807061234", TODAY) is None
    stdnum_ric = pytest.importorskip("stdnum.cn.ric")
    assert not stdnum_ric.is_valid("310115198807061234")


def test_resident_id_messages_say_what_is_wrong() -> None:
    assert "check character" in resident_id_problem("11010519491231002Y", TODAY)  # type: ignore[operator]
    assert "calendar" in resident_id_problem("110105194913310021", TODAY)  # type: ignore[operator]
    assert "future" in resident_id_problem("110105203012310026", TODAY)  # type: ignore[operator]
    assert "999999" in resident_id_problem("999999194912310025", TODAY)  # type: ignore[operator]


def test_area_codes() -> None:
    assert area_code_known("310115") and area_code_known("310103")  # live, retired (Luwan)
    assert area_code_known("110105") and area_code_known("440305")  # national, from stdnum's table
    assert not area_code_known("310199") and not area_code_known("999999") and not area_code_known("110199")


def test_district_matches_resident_id() -> None:
    rule, args = "district_matches_resident_id", {}
    assert ok(rule, "310115", args, field="district", record={"resident_id": "310115198807061234"})
    # a retired code belongs to its successor: Luwan (310103) is now Huangpu (310101)
    assert ok(rule, "310101", args, field="district", record={"resident_id": "310103195001011239"})
    assert ok(rule, "310115", args, field="district", record={"resident_id": "11010519491231002X"})  # not Shanghai
    assert ok(rule, "310115", args, field="district", record={"resident_id": None})
    failed = check(rule, "310104", args, field="district", record={"resident_id": "310115198807061234"})
    assert failed == [Violation(rule, "district", failed[0].message)] and "310115" in failed[0].message
    assert ok(rule, "310115", {"resident_id_field": "rid"}, field="district",
              record={"rid": "310115198807061234", "resident_id": "310104198807061234"})


def test_after() -> None:
    args = {"field": "valid_from"}
    assert ok("after", date(2026, 1, 2), args, field="valid_to", record={"valid_from": date(2026, 1, 1)})
    assert ok("after", date(2026, 1, 1), args, field="valid_to", record={"valid_from": date(2026, 1, 1)})
    assert ok("after", None, args, field="valid_to", record={"valid_from": date(2026, 1, 1)})  # open-ended
    assert not ok("after", date(2025, 12, 31), args, field="valid_to", record={"valid_from": date(2026, 1, 1)})
    strict = {"field": "valid_from", "or_equal": False}
    assert not ok("after", date(2026, 1, 1), strict, field="valid_to", record={"valid_from": date(2026, 1, 1)})
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    assert ok("after", t0, args, field="resolved_at", record={"valid_from": date(2025, 12, 31)})
    assert ok("after", 5, {"field": "low"}, field="high", record={"low": 4})
    assert not ok("after", "x", {"field": "low"}, field="high", record={"low": 4})


def test_reference_uses_the_injected_lookup() -> None:
    answers = {"k1": True, "k2": False, "k3": None}
    asked: list[tuple[str, str]] = []

    def key_exists(resource: str, key: str) -> bool | None:
        asked.append((resource, key))
        return answers[key]

    args = {"resource": "municipal.market.legal-person"}
    assert ok("reference", "k1", args, key_exists=key_exists)
    assert not ok("reference", "k2", args, key_exists=key_exists)
    assert ok("reference", "k3", args, key_exists=key_exists)  # unknown here: not a failure
    assert ok("reference", None, args, key_exists=key_exists)
    assert asked == [("municipal.market.legal-person", k) for k in ("k1", "k2", "k3")]
    assert ok("reference", "anything", args)  # no tables: nothing to check against


def _resource(rules: list[dict[str, Any]], **extra: Any) -> Resource:
    return Resource(id="municipal.health.x", provider="municipal.health", tier="municipal", subject="s",
                    quality_rules=[QualityRule(**r) for r in rules], **extra)


@pytest.mark.parametrize(("rule", "message"), [
    ({"field": "f", "rule": "spellcheck"}, "'spellcheck' .* unknown"),
    ({"field": "f", "rule": "required", "args": {"x": 1}}, "takes no args"),
    ({"field": "f", "rule": "range"}, "needs args min and/or max"),
    ({"field": "f", "rule": "range", "args": {"min": 5, "max": 1}}, "above max"),
    ({"field": "f", "rule": "regex", "args": {"pattern": "("}}, "does not compile"),
    ({"field": "f", "rule": "enum", "args": {"values": []}}, "at least one value"),
    ({"field": "f", "rule": "date_range", "args": {"min": "2020-13-01"}}, "not a date"),
    ({"field": "f", "rule": "date_range", "args": {"min": "2021-01-01", "max": "2020-01-01"}}, "after max"),
    ({"field": "f", "rule": "date_range", "args": {"since": "2021-01-01"}}, "unknown args"),
    ({"field": "f", "rule": "after", "args": {}}, "needs args"),
    ({"field": "f", "rule": "after", "args": {"field": "f"}}, "itself"),
    ({"field": "f", "rule": "after", "args": {"field": "g", "or_equal": "yes"}}, "or_equal"),
    ({"field": "f", "rule": "reference", "args": {"resource": "municipal.nope.x"}}, "not catalogued"),
    ({"field": "f", "rule": "reference", "args": {"resource": "municipal.health.nopk"}}, "one-field primary_key"),
])
def test_bad_declarations_are_refused(rule: dict[str, Any], message: str) -> None:
    nopk = _resource([]).model_copy(update={"id": "municipal.health.nopk"})
    problems = rule_problems([QualityRule(**rule)], resources={"municipal.health.nopk": nopk})
    assert len(problems) == 1
    assert pytest.importorskip("re").search(message, problems[0]), problems
    with pytest.raises(RuleError):
        compile_rules(_resource([rule]), resources={"municipal.health.nopk": nopk})


def test_checker_reports_every_violation_in_order() -> None:
    checker = compile_rules(_resource([
        {"field": "name", "rule": "required"},
        {"field": "resident_id", "rule": "resident_id"},
        {"field": "district", "rule": "district_code"},
        {"field": "dose", "rule": "range", "args": {"min": 1, "max": 10}},
    ]), today=lambda: TODAY)
    good = {"name": "张三", "resident_id": "310115198807061234", "district": "310115", "dose": 2}
    assert checker(good) == []
    bad = {"name": "", "resident_id": "310115198807061235", "district": "310103", "dose": 2}
    assert [(v.rule, v.field) for v in checker(bad)] == [
        ("required", "name"), ("resident_id", "resident_id"), ("district_code", "district")]
    assert compile_rules(_resource([])) is NO_RULES and not NO_RULES


def test_today_is_recomputed_at_midnight_china_time() -> None:
    now = [datetime(2026, 12, 7, 15, 59, 59, tzinfo=UTC).timestamp()]  # 23:59:59 in Shanghai
    today = Today(lambda: now[0])
    assert today() == date(2026, 12, 7)
    now[0] += 1
    assert today() == date(2026, 12, 8)


def test_not_future_timestamps_with_the_real_clock() -> None:
    """The fast path for aware timestamps (Today.next_midnight) agrees with the day comparison."""
    from datetime import timedelta

    checker = compile_checker([QualityRule(field="at", rule="not_future")])
    now = datetime.now(UTC)
    assert checker({"at": now}) == [] and checker({"at": now - timedelta(days=400)}) == []
    assert [v.rule for v in checker({"at": now + timedelta(days=2)})] == ["not_future"]
