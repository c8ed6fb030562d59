"""Data quality rules: each a pure check of one field (or one field against another) of a decoded record.

A rule is declared per field in the catalogue (``QualityRule(field, rule, args)``). ``compile_rules`` turns a
resource's declarations into a ``Checker`` once per catalogue version: arguments are validated and parsed
then (patterns compiled, dates parsed, enum values frozen), so checking a record is a handful of closure
calls and no parsing. The same compile step refuses bad declarations at cataloguing (``RuleError``).

Every rule but ``required`` checks present values only: a null (absent) optional field passes.

Which library checks what, and why:

* Resident IDs (GB 11643) and USCCs (GB 32100): ``hub.identifiers`` (checksum, birth date not in the future,
  registration authorities A/N/Y). Not ``stdnum.cn.ric.validate`` / ``stdnum.cn.uscc``: stdnum rejects a Pudong
  number (310115, created 1992) of someone born before 1992 because it compares the birth year with the code's
  validity period, and a resident ID's area code is where the number was *assigned* (see hub/identifiers.py).
* The area code of a resident ID: Shanghai codes (prefix 31) must be a live or retired code of
  ``hub.identifiers`` (our list is complete for 1982-2016 and maps retired codes to their successor); other
  codes are looked up in ``python-stdnum``'s GB/T 2260 table (``stdnum.numdb`` ``cn/loc``, ~6,900 codes with
  their history) -- we use only "was this code ever assigned", never its validity years, for the reason above.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NamedTuple

from hub.identifiers import (
    CHINA_STANDARD_TIME,
    DISTRICTS,
    RETIRED_CODES,
    is_district_code,
    is_valid_resident_id,
    is_valid_uscc,
    resident_id_check_char,
)

if TYPE_CHECKING:
    from hub.catalogue.model import QualityRule, Resource

# (resource id, primary key value) -> True (a current row), False (no such row), None (unknown here: the
# partition holding it is not on this worker, or its state is still restoring).
KeyExists = Callable[[str, str], bool | None]

# A check of one record: None if it passes, else what is wrong.
Check = Callable[[Mapping[str, Any]], str | None]
# A check of one present (non-null) field value.
ValueTest = Callable[[Any], str | None]


@dataclass(frozen=True, slots=True)
class OnValue:
    """A rule that tests its field's value when present: the Checker reads the field and skips nulls itself,
    saving a call per rule and record."""

    test: ValueTest


class Violation(NamedTuple):
    """One failed rule: its name (a bounded metric label), the field, and what is wrong in words."""

    rule: str
    field: str
    message: str


class RuleError(ValueError):
    """A quality rule declaration that cannot be compiled (unknown rule, wrong or missing args)."""


@dataclass(frozen=True, slots=True)
class Checker:
    """A resource's compiled rules: ``checker(record)`` -> every violation, in declaration order."""

    # (rule, field, test, on_value): on_value: ``test(value)`` of the present field, else ``test(record)``
    checks: tuple[tuple[str, str, Callable[[Any], str | None], bool], ...] = ()

    def __call__(self, record: Mapping[str, Any]) -> list[Violation]:
        failed: list[Violation] = []
        get = record.get
        for rule, field_name, test, on_value in self.checks:
            if on_value:
                value = get(field_name)
                if value is None:  # every rule but required checks present values only
                    continue
                message = test(value)
            else:
                message = test(record)
            if message is not None:
                failed.append(Violation(rule, field_name, message))
        return failed

    def __bool__(self) -> bool:
        return bool(self.checks)


NO_RULES = Checker()


class Today:
    """Today's date in China Standard Time, recomputed only when the clock passes midnight (a context lives
    for many days; a ``date`` per record would cost more than the rule)."""

    __slots__ = ("_clock", "_day", "_midnight", "_until")

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._day = date.min
        self._midnight = datetime.min.replace(tzinfo=UTC)
        self._until = -math.inf

    def __call__(self) -> date:
        now = self._clock()
        if now >= self._until:
            moment = datetime.fromtimestamp(now, CHINA_STANDARD_TIME)
            self._day = moment.date()
            self._midnight = datetime.combine(self._day + timedelta(days=1), datetime.min.time(), CHINA_STANDARD_TIME)
            self._until = self._midnight.timestamp()
        return self._day

    def next_midnight(self) -> datetime:
        """The start of tomorrow (China time), aware: a timestamp is not in the future iff it is before this."""
        self()
        return self._midnight


# ------------------------------------------------------------------------------------------- value helpers


def _as_date(value: Any) -> date | None:
    """A field value as a date: Avro ``date`` (date), ``timestamp-*`` (aware datetime, the CST day), an ISO
    string, or epoch ms (int). None if it is none of those."""
    if isinstance(value, datetime):
        return value.astimezone(CHINA_STANDARD_TIME).date() if value.tzinfo else value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            return None
    if isinstance(value, int) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000, CHINA_STANDARD_TIME).date()
    return None


def _comparable(value: Any) -> Any:
    """A value two fields can be ordered by: numbers as they are, dates and timestamps as aware datetimes."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=CHINA_STANDARD_TIME)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=CHINA_STANDARD_TIME)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return None


def _parse_arg_date(rule: QualityRule, name: str) -> date | None:
    raw = rule.args.get(name)
    if raw is None:
        return None
    if isinstance(raw, date) and not isinstance(raw, datetime):
        return raw  # YAML reads an unquoted 2020-01-01 as a date
    if not isinstance(raw, str):
        raise RuleError(f"quality rule {rule.rule} on {rule.field}: {name} must be a date YYYY-MM-DD, got {raw!r}")
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise RuleError(f"quality rule {rule.rule} on {rule.field}: {name} {raw!r} is not a date YYYY-MM-DD") from None


@lru_cache(maxsize=8192)
def area_code_known(area: str) -> bool:
    """True if a resident ID's 6-digit area code was ever assigned: Shanghai codes from hub.identifiers (live or
    retired), others from python-stdnum's GB/T 2260 table. Cached: there are ~7,000 codes."""
    if area.startswith("31"):
        return area in DISTRICTS or area in RETIRED_CODES
    from stdnum import numdb  # runtime dependency (pyproject): the national code table

    info = {k: v for _, props in numdb.get("cn/loc").info(area) for k, v in props.items()}
    return "county" in info


def resident_id_problem(value: Any, today: date) -> str | None:
    """Why ``value`` is not a valid resident ID (GB 11643, area code known, born by ``today``), or None."""
    if is_valid_resident_id(value, today=today):
        return None if area_code_known(value[:6]) else f"area code {value[:6]} is not a known GB/T 2260 code"
    # failure path only: say which part is wrong
    if not isinstance(value, str) or len(value) != 18 or not value.isascii() or not value[:17].isdigit():
        return "not 18 characters: 17 digits and a check digit or X"
    try:
        born = date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return f"birth date {value[6:14]} is not a calendar date"
    if born > today:
        return f"birth date {born} is in the future"
    if born.year < 1800:
        return f"birth date {born} is before 1800"
    expected = resident_id_check_char(value[:17])
    if value[17].upper() != expected:
        return f"check character {value[17]} is wrong (GB 11643 gives {expected})"
    return f"area code {value[:6]} has no known province"


# ------------------------------------------------------------------------------------------- the rules

# name -> (builder(rule, env) -> Check, one-line description for errors and docs)
Builder = Callable[["QualityRule", "_Env"], "Check | OnValue"]


@dataclass(frozen=True, slots=True)
class _Env:
    today: Callable[[], date]
    key_exists: KeyExists | None
    resources: Mapping[str, Resource] | None  # the catalogue, to check reference targets; None: not checked


def _no_args(rule: QualityRule) -> None:
    if rule.args:
        raise RuleError(f"quality rule {rule.rule} on {rule.field} takes no args, got {sorted(rule.args)}")


def _only_args(rule: QualityRule, allowed: set[str], usage: str) -> None:
    extra = set(rule.args) - allowed
    if extra:
        raise RuleError(f"quality rule {rule.rule} on {rule.field}: unknown args {sorted(extra)}; usage: {usage}")


def _required(rule: QualityRule, env: _Env) -> Check | OnValue:
    _no_args(rule)
    f = rule.field

    def check(record: Mapping[str, Any]) -> str | None:
        value = record.get(f)
        if value is None or (isinstance(value, str) and not value.strip()):
            return "is required but missing or empty"
        return None

    return check


def _present(rule: QualityRule, test: ValueTest) -> OnValue:
    """A check of the field's value when present (null passes)."""
    return OnValue(test)


def _regex(rule: QualityRule, env: _Env) -> Check | OnValue:
    pattern = rule.args.get("pattern")
    if not isinstance(pattern, str) or set(rule.args) != {"pattern"}:
        raise RuleError(f"quality rule regex on {rule.field} needs args {{pattern: <regular expression>}}")
    try:
        search = re.compile(pattern).search
    except re.error as exc:
        raise RuleError(f"quality rule regex on {rule.field}: pattern does not compile: {exc}") from None

    def test(value: Any) -> str | None:
        if isinstance(value, str) and search(value):
            return None
        return f"{_show(value)} does not match {pattern}"

    return _present(rule, test)


def _enum(rule: QualityRule, env: _Env) -> Check | OnValue:
    values = rule.args.get("values")
    if not isinstance(values, list) or not values or set(rule.args) != {"values"}:
        raise RuleError(f"quality rule enum on {rule.field} needs args {{values: [...]}} with at least one value")
    if not all(isinstance(v, str | int | float) for v in values):
        raise RuleError(f"quality rule enum on {rule.field}: values must be strings or numbers")
    allowed = frozenset(values)
    shown = ", ".join(map(str, values))

    def test(value: Any) -> str | None:
        return None if value in allowed else f"{_show(value)} is not one of {shown}"

    return _present(rule, test)


def _range(rule: QualityRule, env: _Env) -> Check | OnValue:
    args = rule.args
    bounds = {k: v for k, v in args.items() if k in ("min", "max")}
    if not bounds or set(args) - {"min", "max"}:
        raise RuleError(
            f"quality rule range on {rule.field} needs args min and/or max (numbers), e.g. {{min: 1, max: 10}}"
        )
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in bounds.values()):
        raise RuleError(f"quality rule range on {rule.field}: min and max must be numbers")
    low, high = bounds.get("min", -math.inf), bounds.get("max", math.inf)
    if low > high:
        raise RuleError(f"quality rule range on {rule.field}: min ({low}) is above max ({high})")

    def test(value: Any) -> str | None:
        if isinstance(value, bool):
            return f"{value} is not a number"
        if not isinstance(value, int | float):
            try:
                value = float(value)  # Decimal, numeric strings
            except (TypeError, ValueError):
                return f"{_show(value)} is not a number"
        if low <= value <= high:
            return None
        return f"{value} is outside [{'' if low == -math.inf else low}, {'' if high == math.inf else high}]"

    return _present(rule, test)


def _date_range(rule: QualityRule, env: _Env) -> Check | OnValue:
    _only_args(rule, {"min", "max"}, "{min: YYYY-MM-DD, max: YYYY-MM-DD} (either or both)")
    low, high = _parse_arg_date(rule, "min"), _parse_arg_date(rule, "max")
    if low is None and high is None:
        raise RuleError(f"quality rule date_range on {rule.field} needs args min and/or max (YYYY-MM-DD)")
    if low is not None and high is not None and low > high:
        raise RuleError(f"quality rule date_range on {rule.field}: min ({low}) is after max ({high})")
    first, last = low or date.min, high or date.max

    def test(value: Any) -> str | None:
        day = _as_date(value)
        if day is None:
            return f"{_show(value)} is not a date"
        if first <= day <= last:
            return None
        return f"{day} is outside [{low or ''}, {high or ''}]"

    return _present(rule, test)


def _not_future(rule: QualityRule, env: _Env) -> Check | OnValue:
    _no_args(rule)
    today = env.today
    midnight = getattr(today, "next_midnight", None)

    def test(value: Any) -> str | None:
        if midnight is not None and isinstance(value, datetime) and value.tzinfo is not None and value < midnight():
            return None  # the common case (a timestamp-millis field), without converting it to a day
        day = _as_date(value)
        if day is None:
            return f"{_show(value)} is not a date"
        now = today()
        return None if day <= now else f"{day} is in the future (today is {now}, China time)"

    return _present(rule, test)


def _resident_id(rule: QualityRule, env: _Env) -> Check | OnValue:
    _no_args(rule)
    today = env.today

    def test(value: Any) -> str | None:
        problem = resident_id_problem(value, today())
        return None if problem is None else f"not a valid resident ID: {problem}"

    return _present(rule, test)


def _uscc(rule: QualityRule, env: _Env) -> Check | OnValue:
    _no_args(rule)
    return _present(rule, lambda v: None if is_valid_uscc(v) else f"{_show(v)} is not a valid USCC (GB 32100)")


def _district_code(rule: QualityRule, env: _Env) -> Check | OnValue:
    _no_args(rule)
    return _present(
        rule, lambda v: None if is_district_code(v) else f"{_show(v)} is not a live Shanghai district code"
    )


def _district_matches_resident_id(rule: QualityRule, env: _Env) -> Check | OnValue:
    _only_args(rule, {"resident_id_field"}, "{resident_id_field: <field>} (default resident_id)")
    rid_field = rule.args.get("resident_id_field", "resident_id")
    if not isinstance(rid_field, str):
        raise RuleError(f"quality rule district_matches_resident_id on {rule.field}: resident_id_field is a name")
    f = rule.field

    def check(record: Mapping[str, Any]) -> str | None:
        district, rid = record.get(f), record.get(rid_field)
        # only a Shanghai area code says which district: a person registered elsewhere may be served in any
        # district, and an invalid ID is the resident_id rule's to report
        if not isinstance(rid, str) or district is None or not rid.startswith("31"):
            return None
        area = rid[:6]
        owner = area if area in DISTRICTS else (RETIRED_CODES[area].successor if area in RETIRED_CODES else None)
        if owner is None or owner == district:
            return None
        return f"{district} differs from the district of {rid_field}'s area code {area} ({owner})"

    return check


def _after(rule: QualityRule, env: _Env) -> Check | OnValue:
    _only_args(rule, {"field", "or_equal"}, "{field: <earlier field>, or_equal: true}")
    other = rule.args.get("field")
    or_equal = rule.args.get("or_equal", True)
    if not isinstance(other, str) or not other:
        raise RuleError(f"quality rule after on {rule.field} needs args {{field: <the field it must not precede>}}")
    if not isinstance(or_equal, bool):
        raise RuleError(f"quality rule after on {rule.field}: or_equal must be true or false")
    if other == rule.field:
        raise RuleError(f"quality rule after on {rule.field}: compares the field with itself")
    f = rule.field
    word = "before" if or_equal else "not after"

    def check(record: Mapping[str, Any]) -> str | None:
        later, earlier = record.get(f), record.get(other)
        if later is None or earlier is None:
            return None  # an open end (null) is not out of order
        a, b = _comparable(later), _comparable(earlier)
        try:
            ok = a >= b if or_equal else a > b
        except TypeError:
            return f"{_show(later)} cannot be compared with {other} {_show(earlier)}"
        return None if ok else f"{_show(later)} is {word} {other} {_show(earlier)}"

    return check


def _reference(rule: QualityRule, env: _Env) -> Check | OnValue:
    _only_args(rule, {"resource"}, "{resource: <catalogued resource id>}")
    target = rule.args.get("resource")
    if not isinstance(target, str) or not target:
        raise RuleError(f"quality rule reference on {rule.field} needs args {{resource: <catalogued resource id>}}")
    if env.resources is not None:
        found = env.resources.get(target)
        if found is None:
            raise RuleError(f"quality rule reference on {rule.field}: resource {target} is not catalogued")
        if len(found.primary_key) != 1 or found.sharing == "none":
            raise RuleError(
                f"quality rule reference on {rule.field}: {target} must have a one-field primary_key and be "
                "shared (its current rows are what a reference is checked against)"
            )
    key_exists = env.key_exists
    if key_exists is None:  # no current-row tables (seed validation, unit tests): nothing to check against
        return lambda record: None

    def test(value: Any) -> str | None:
        # None: the row's partition is not held by this worker (or still restoring): unknown is not a failure
        return None if key_exists(target, str(value)) is not False else f"{_show(value)} is not a key of {target}"

    return _present(rule, test)


RULES: dict[str, tuple[Builder, str]] = {
    "required": (_required, "the field is present and not empty (no args)"),
    "regex": (_regex, "a string matching args.pattern (Python re, searched: anchor with ^...$)"),
    "enum": (_enum, "one of args.values"),
    "range": (_range, "a number within args.min and/or args.max, inclusive"),
    "date_range": (_date_range, "a date (or timestamp, its China-time day) within args.min/args.max (YYYY-MM-DD)"),
    "not_future": (_not_future, "a date or timestamp not after today (China time) (no args)"),
    "resident_id": (_resident_id, "a GB 11643 resident ID: check digit, real past birth date, known area code"),
    "uscc": (_uscc, "a GB 32100 unified social credit code (no args)"),
    "district_code": (_district_code, "one of the 16 live Shanghai district codes (no args)"),
    "district_matches_resident_id": (
        _district_matches_resident_id,
        "the district is the one of the resident ID's Shanghai area code (args.resident_id_field, default "
        "resident_id); IDs from outside Shanghai pass",
    ),
    "after": (_after, "not before the field args.field (args.or_equal, default true: equal passes)"),
    "reference": (_reference, "the primary key of a current record of the catalogued resource args.resource"),
}

QUALITY_RULES: tuple[str, ...] = tuple(RULES)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def compile_rule(rule: QualityRule, env: _Env) -> Check | OnValue:
    entry = RULES.get(rule.rule)
    if entry is None:
        raise RuleError(f"quality rule {rule.rule!r} on {rule.field} is unknown (known: {', '.join(RULES)})")
    return entry[0](rule, env)


def compile_checker(
    rules: Sequence[QualityRule], *, key_exists: KeyExists | None = None, today: Callable[[], date] | None = None,
    resources: Mapping[str, Resource] | None = None,
) -> Checker:
    """Quality rule declarations compiled into one ``Checker`` (raises ``RuleError`` listing every problem).

    ``key_exists`` answers ``reference`` rules against the hub's current rows; ``resources`` (the catalogue),
    when given, is where reference targets must be catalogued.
    """
    env = _Env(today or Today(), key_exists, resources)
    checks: list[tuple[str, str, Callable[[Any], str | None], bool]] = []
    problems: list[str] = []
    for rule in rules:
        try:
            compiled = compile_rule(rule, env)
            if isinstance(compiled, OnValue):
                checks.append((rule.rule, rule.field, compiled.test, True))
            else:
                checks.append((rule.rule, rule.field, compiled, False))
        except RuleError as exc:
            problems.append(str(exc))
    if problems:
        raise RuleError(" | ".join(problems))
    return Checker(tuple(checks)) if checks else NO_RULES


def compile_rules(
    resource: Resource, *, key_exists: KeyExists | None = None, today: Callable[[], date] | None = None,
    resources: Mapping[str, Resource] | None = None,
) -> Checker:
    """A resource's quality rules as one ``Checker`` (once per catalogue version: see ``compile_checker``)."""
    return compile_checker(resource.quality_rules, key_exists=key_exists, today=today, resources=resources)


def fields_read(rule: QualityRule) -> tuple[str, ...]:
    """Every field a rule reads: its own and, for cross-field rules, the other (cataloguing checks they exist)."""
    if rule.rule == "after" and isinstance(rule.args.get("field"), str):
        return (rule.field, rule.args["field"])
    if rule.rule == "district_matches_resident_id":
        other = rule.args.get("resident_id_field", "resident_id")
        return (rule.field, other) if isinstance(other, str) else (rule.field,)
    return (rule.field,)


def rule_problems(rules: Sequence[QualityRule], *, resources: Mapping[str, Resource] | None = None) -> list[str]:
    """What is wrong with rule declarations (empty if they compile): the cataloguing check."""
    try:
        compile_checker(rules, resources=resources)
    except RuleError as exc:
        return str(exc).split(" | ")
    return []
