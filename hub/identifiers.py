"""Shanghai district codes, resident IDs (GB 11643), unified social credit codes (GB 32100), masking.

Pure functions, no I/O. The checks follow the standards as summarised in ``docs/domain.md``; where they differ
from ``python-stdnum`` (``stdnum.cn.ric`` / ``stdnum.cn.uscc``) it is on purpose:

* A resident ID's area code is the code of the place of household registration *when the number was
  assigned*, not at birth, so a Pudong number (310115, created 1992) of someone born in 1988 is valid.
  stdnum rejects it because it compares the birth year with the code's validity period.
* A resident ID with a future birth date is invalid here (stdnum accepts it).
* A USCC may be issued by registration authorities ``A``, ``N`` and ``Y`` (GB 32100 appendix), which stdnum
  rejects because it requires the first eight characters to be digits.
* Validators do not strip whitespace or separators: a value stored in a record is either the identifier
  or not. :func:`normalize_resident_id` / :func:`normalize_uscc` produce the canonical form of user input.
* Letters are accepted in either case (``x`` and ``X`` both mean ten), unless ``strict=True`` is given,
  which demands the canonical upper-case form a register should store.

The ``make_*`` generators produce valid, realistic-looking but fictitious identifiers for tests and the
demo; they draw only from the ``random.Random`` passed in, so a seed reproduces them exactly.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import date, datetime, timedelta, timezone
from types import MappingProxyType
from typing import NamedTuple

__all__ = [
    "CHINA_STANDARD_TIME",
    "DISTRICTS",
    "DISTRICT_CODES",
    "District",
    "RETIRED_CODES",
    "RetiredCode",
    "USCC_ALPHABET",
    "is_district_code",
    "is_valid_resident_id",
    "is_valid_uscc",
    "make_chinese_name",
    "make_phone",
    "make_resident_id",
    "make_uscc",
    "mask_name",
    "mask_phone",
    "mask_resident_id",
    "normalize_resident_id",
    "normalize_uscc",
    "organization_code_check_char",
    "resident_id_birth_date",
    "resident_id_check_char",
    "resident_id_district",
    "resident_id_sex",
    "uscc_check_char",
]

CHINA_STANDARD_TIME = timezone(timedelta(hours=8), "CST")

# ---------------------------------------------------------------------------------------------------------
# Districts (GB/T 2260)
# ---------------------------------------------------------------------------------------------------------


class District(NamedTuple):
    code: str
    name_en: str
    name_zh: str


_DISTRICT_LIST = (
    District("310101", "Huangpu", "黄浦区"),
    District("310104", "Xuhui", "徐汇区"),
    District("310105", "Changning", "长宁区"),
    District("310106", "Jing'an", "静安区"),
    District("310107", "Putuo", "普陀区"),
    District("310109", "Hongkou", "虹口区"),
    District("310110", "Yangpu", "杨浦区"),
    District("310112", "Minhang", "闵行区"),
    District("310113", "Baoshan", "宝山区"),
    District("310114", "Jiading", "嘉定区"),
    District("310115", "Pudong", "浦东新区"),
    District("310116", "Jinshan", "金山区"),
    District("310117", "Songjiang", "松江区"),
    District("310118", "Qingpu", "青浦区"),
    District("310120", "Fengxian", "奉贤区"),
    District("310151", "Chongming", "崇明区"),
)

#: The 16 live districts of Shanghai, by GB/T 2260 code.
DISTRICTS: Mapping[str, District] = MappingProxyType({d.code: d for d in _DISTRICT_LIST})
DISTRICT_CODES: tuple[str, ...] = tuple(DISTRICTS)


class RetiredCode(NamedTuple):
    code: str
    name_en: str
    name_zh: str
    retired: int  # year the code stopped being assigned
    successor: str  # live district that now covers the area


#: Retired Shanghai area codes: valid inside resident IDs (the area code is fixed when the number is
#: assigned), never a live district. The first six are the ones docs/domain.md names; the rest are the other
#: codes GB/T 2260 assigned in Shanghai between 1982 and 2016.
RETIRED_CODES: Mapping[str, RetiredCode] = MappingProxyType(
    {
        r.code: r
        for r in (
            RetiredCode("310102", "Nanshi", "南市区", 2000, "310101"),
            RetiredCode("310103", "Luwan", "卢湾区", 2011, "310101"),
            RetiredCode("310108", "Zhabei", "闸北区", 2015, "310106"),
            RetiredCode("310119", "Nanhui", "南汇区", 2009, "310115"),
            RetiredCode("310225", "Nanhui County", "南汇县", 2001, "310115"),
            RetiredCode("310230", "Chongming County", "崇明县", 2016, "310151"),
            RetiredCode("310111", "Wusong", "吴淞区", 1988, "310113"),
            RetiredCode("310221", "Shanghai County", "上海县", 1992, "310112"),
            RetiredCode("310222", "Jiading County", "嘉定县", 1992, "310114"),
            RetiredCode("310223", "Baoshan County", "宝山县", 1988, "310113"),
            RetiredCode("310224", "Chuansha County", "川沙县", 1993, "310115"),
            RetiredCode("310226", "Fengxian County", "奉贤县", 2001, "310120"),
            RetiredCode("310227", "Songjiang County", "松江县", 1998, "310117"),
            RetiredCode("310228", "Jinshan County", "金山县", 1997, "310116"),
            RetiredCode("310229", "Qingpu County", "青浦县", 1999, "310118"),
        )
    }
)

# Province-level prefixes of GB/T 2260 (plus 81/82/83: residence permits of Hong Kong, Macao and Taiwan
# residents, which use the same 18-character format).
_PROVINCE_PREFIXES = frozenset(
    "11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46 "
    "50 51 52 53 54 61 62 63 64 65 71 81 82 83".split()
)


def is_district_code(code: object) -> bool:
    """True for the code of one of the 16 live districts (``"310115"``); False for retired codes."""
    return isinstance(code, str) and code in DISTRICTS


# ---------------------------------------------------------------------------------------------------------
# Resident identity number (GB 11643-1999)
# ---------------------------------------------------------------------------------------------------------

_RIC_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_RIC_CHECK = "10X98765432"
_RIC_MIN_YEAR = 1800


def resident_id_check_char(first17: str) -> str:
    """The GB 11643 check character (``0``-``9`` or ``X``) for the first 17 digits of a resident ID.

    Raises ``ValueError`` unless ``first17`` is exactly 17 ASCII digits.
    """
    if len(first17) != 17 or not (first17.isascii() and first17.isdigit()):
        raise ValueError(f"expected the first 17 digits of a resident ID, got {first17!r}")
    # The weights are 2**(17-i) mod 11, and 13 = 2 (mod 11): reading the digits in base 13 sums them with those
    # weights (over 2) in one C call, ~15x faster than the weighted sum; every record's ID is checked in the
    # hot path (hub.quality). Equal to sum(int(c) * w for c, w in zip(first17, _RIC_WEIGHTS)) % 11.
    return _RIC_CHECK[2 * int(first17, 13) % 11]


def _today() -> date:
    return datetime.now(CHINA_STANDARD_TIME).date()


def _parse_birth_date(digits: str) -> date | None:
    """``YYYYMMDD`` (8 ASCII digits, as callers check) as a date, None if not a calendar date.

    ``date.fromisoformat`` reads the ISO basic form in one C call (Python 3.11+), ~3x faster than three int()s and
    a date(): every record's resident IDs are checked in the hot path (hub.quality).
    """
    try:
        return date.fromisoformat(digits)
    except ValueError:
        return None


def is_valid_resident_id(s: object, *, today: date | None = None, strict: bool = False) -> bool:
    """True if ``s`` is a well-formed 18-character resident identity number.

    Checks: length 18; 17 ASCII digits then a digit or ``X``; an area code whose first two digits are a
    province-level code; a real calendar birth date (year >= 1800) not after ``today`` (default: today in
    China Standard Time); the check character. ``x`` is accepted for ``X`` unless ``strict``.
    """
    if not isinstance(s, str) or len(s) != 18 or not s.isascii():
        return False
    body, check = s[:17], s[17]
    if not body.isdigit():
        return False
    if check == "x" and not strict:
        check = "X"
    if body[:2] not in _PROVINCE_PREFIXES:
        return False
    born = _parse_birth_date(body[6:14])
    if born is None or born.year < _RIC_MIN_YEAR or born > (today or _today()):
        return False
    return resident_id_check_char(body) == check


def normalize_resident_id(s: str) -> str:
    """Canonical form of user input: surrounding whitespace removed, ``x`` upper-cased. No validation."""
    return s.strip().upper()


def resident_id_birth_date(s: str) -> date | None:
    """Birth date encoded in a valid resident ID, else None."""
    return _parse_birth_date(s[6:14]) if is_valid_resident_id(s) else None


def resident_id_sex(s: str) -> str | None:
    """``"M"`` or ``"F"`` from the sequence number's parity (odd = male) of a valid resident ID, else None."""
    if not is_valid_resident_id(s):
        return None
    return "M" if int(s[16]) % 2 else "F"


def resident_id_district(s: object) -> str | None:
    """The live Shanghai district a resident ID's area code belongs to, or None.

    A live district code maps to itself; a retired Shanghai code maps to the live district that now
    covers its area (310103 Luwan -> 310101 Huangpu). None for non-Shanghai area codes and for anything
    that is not a valid resident ID.
    """
    if not isinstance(s, str) or not is_valid_resident_id(s):
        return None
    area = s[:6]
    if area in DISTRICTS:
        return area
    retired = RETIRED_CODES.get(area)
    return retired.successor if retired else None


# ---------------------------------------------------------------------------------------------------------
# Unified social credit code (GB 32100-2015) and organisation code (GB 11714-1997)
# ---------------------------------------------------------------------------------------------------------

USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # no I, O, S, V, Z
_USCC_VALUE = {c: i for i, c in enumerate(USCC_ALPHABET)}
_USCC_CHARS = frozenset(USCC_ALPHABET)
_USCC_AS_BASE34 = str.maketrans({c: "0123456789abcdefghijklmnopqrstu"[i] for i, c in enumerate(USCC_ALPHABET)})
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
# Registration authorities of GB 32100: 1 establishment offices, 2 foreign affairs, 3 justice, 4 culture,
# 5 civil affairs, 6 tourism, 7 religious affairs, 8 trade unions, 9 market regulation, A central military
# commission, N agriculture, Y others.
_USCC_AUTHORITIES = frozenset("123456789ANY")

_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)


def uscc_check_char(first17: str) -> str:
    """The GB 32100 check character for the first 17 characters of a unified social credit code.

    Lower-case letters are read as upper case. Raises ``ValueError`` if ``first17`` is not 17 characters
    of the code alphabet ``0-9 A-H J-N P-R T U W-Y``.
    """
    if len(first17) != 17:
        raise ValueError(f"expected the first 17 characters of a USCC, got {first17!r}")
    upper = first17.upper()
    if not _USCC_CHARS.issuperset(upper):
        bad = next(c for c in upper if c not in _USCC_CHARS)
        raise ValueError(f"{bad!r} is not in the USCC alphabet")
    # The weights are 3**i mod 31, and 34 = 3 (mod 31): the values written as base-34 digits, last first, and
    # read by int() are the weighted sum mod 31 in one C call (~10x faster; every record's USCCs are checked in
    # the hot path). Equal to sum(_USCC_VALUE[c] * w for c, w in zip(upper, _USCC_WEIGHTS)) % 31.
    total = int(upper.translate(_USCC_AS_BASE34)[::-1], 34)
    return USCC_ALPHABET[(31 - total % 31) % 31]


def is_valid_uscc(s: object, *, strict: bool = False) -> bool:
    """True if ``s`` is a well-formed 18-character unified social credit code.

    Checks: length 18; a registration authority code (``1``-``9``, ``A``, ``N``, ``Y``); an organisation
    type digit; a 6-digit area code; a 9-character organisation code and the check character, all in the
    code alphabet. Lower case is accepted unless ``strict``. The embedded GB 11714 organisation code's
    own check character is not enforced (codes issued after 2015 need not satisfy it).
    """
    if not isinstance(s, str) or len(s) != 18 or not s.isascii():
        return False
    if not strict:
        s = s.upper()
    if s[0] not in _USCC_AUTHORITIES or not s[1].isdigit() or s[1] == "0" or not s[2:8].isdigit():
        return False
    if not _USCC_CHARS.issuperset(s[8:]):
        return False
    return uscc_check_char(s[:17]) == s[17]


def normalize_uscc(s: str) -> str:
    """Canonical form of user input: whitespace and hyphens removed, upper case. No validation."""
    return "".join(c for c in s if not c.isspace() and c != "-").upper()


def organization_code_check_char(first8: str) -> str:
    """The GB 11714 check character (``0``-``9`` or ``X``) of an 8-character organisation code body."""
    if len(first8) != 8 or not first8.isascii() or not first8.isalnum():
        raise ValueError(f"expected 8 digits or upper-case letters, got {first8!r}")
    total = sum(int(c, 36) * w for c, w in zip(first8.upper(), _ORG_WEIGHTS, strict=True))
    check = 11 - total % 11
    return {10: "X", 11: "0"}.get(check, str(check))


# ---------------------------------------------------------------------------------------------------------
# Masking (display of L3 personal data to consumers cleared below it)
# ---------------------------------------------------------------------------------------------------------

MASK = "*"


def mask_resident_id(s: str) -> str:
    """``310115198807061234`` -> ``310115********1234``.

    Keeps the area code and the last four characters when at least four characters stay hidden (18- and
    15-digit numbers); a shorter value keeps only its last quarter. The length is preserved.
    """
    n = len(s)
    if n >= 14:
        return s[:6] + MASK * (n - 10) + s[-4:]
    keep = n // 4
    return MASK * (n - keep) + (s[n - keep :] if keep else "")


def _mask_digits(s: str, positions: list[int], head: int, tail: int) -> str:
    hidden = set(positions[head : len(positions) - tail])
    return "".join(MASK if i in hidden else c for i, c in enumerate(s))


def mask_phone(s: str) -> str:
    """``13912345678`` -> ``139****5678``; separators and a ``+86`` prefix are kept.

    A number of at least 11 digits keeps its first three and last four digits (after a leading 86 country
    code); 7-10 digits (a landline) keep the last four; shorter values are hidden entirely.
    Non-digit characters are kept in place.
    """
    positions = [i for i, c in enumerate(s) if c.isdigit()]
    digits = "".join(s[i] for i in positions)
    n = len(digits)
    if n == 13 and digits.startswith("86") and digits[2] == "1":
        return _mask_digits(s, positions, 5, 4)
    if n >= 11:
        return _mask_digits(s, positions, 3, 4)
    if n >= 7:
        return _mask_digits(s, positions, 0, 4)
    return "".join(MASK if c.isdigit() else c for c in s)


_COMPOUND_SURNAMES = frozenset(
    "欧阳 司马 上官 诸葛 东方 皇甫 尉迟 公孙 慕容 长孙 "
    "宇文 司徒 夏侯 令狐 端木 独孤 南宫 西门 澹台 轩辕".split()
)
_NAME_SEPARATORS = frozenset(" ·•.-'")


def mask_name(s: str) -> str:
    """``张三丰`` -> ``张**``: keep the surname, hide the given name, preserve the length.

    A compound surname (``欧阳娜娜`` -> ``欧阳**``) is kept whole when a given name follows it.
    A one-character name is hidden entirely. For names with separators (``阿依古丽·买买提``,
    ``John Smith``) only the first character is kept and separators stay in place.
    Surrounding whitespace is dropped.
    """
    s = s.strip()
    if len(s) <= 1:
        return MASK * len(s)
    if any(c in _NAME_SEPARATORS for c in s):
        return s[0] + "".join(c if c in _NAME_SEPARATORS else MASK for c in s[1:])
    keep = 2 if len(s) > 2 and s[:2] in _COMPOUND_SURNAMES else 1
    return s[:keep] + MASK * (len(s) - keep)


# ---------------------------------------------------------------------------------------------------------
# Generators of fictitious test and demo data
# ---------------------------------------------------------------------------------------------------------


def _random_birth_date(rng: random.Random, first_year: int, last_year: int) -> date:
    start = date(first_year, 1, 1).toordinal()
    end = date(last_year, 12, 31).toordinal()
    return date.fromordinal(rng.randint(start, end))


def make_resident_id(
    rng: random.Random, district: str, *, born: date | None = None, sex: str | None = None
) -> str:
    """A valid resident ID with area code ``district``, drawn from ``rng``.

    ``district`` is any 6-digit area code with a province-level prefix (a live or retired Shanghai code,
    or e.g. ``110105``). For a retired Shanghai code the birth date falls before the code's retirement, as
    a real number would. ``born`` fixes the birth date (default: 1940 to 2020); ``sex`` ``"M"``/``"F"``
    fixes the parity of the sequence number.
    """
    if len(district) != 6 or not district.isdigit() or district[:2] not in _PROVINCE_PREFIXES:
        raise ValueError(f"{district!r} is not a 6-digit GB/T 2260 area code")
    if sex not in (None, "M", "F"):
        raise ValueError(f"sex must be 'M' or 'F', got {sex!r}")
    if born is None:
        retired = RETIRED_CODES.get(district)
        last_year = min(2020, retired.retired - 1) if retired else 2020
        born = _random_birth_date(rng, min(1940, last_year - 20), last_year)
    sequence = rng.randrange(0, 1000)
    wanted = {"M": 1, "F": 0}.get(sex or "")
    if wanted is not None and sequence % 2 != wanted:
        sequence = sequence + 1 if sequence < 999 else sequence - 1
    body = f"{district}{born:%Y%m%d}{sequence:03d}"
    return body + resident_id_check_char(body)


_USCC_KINDS = (
    ("91", 80),  # enterprise registered with market regulation
    ("92", 8),  # individual business
    ("93", 2),  # farmers' professional cooperative
    ("12", 4),  # public institution
    ("11", 2),  # government body
    ("51", 2),  # social organisation
    ("52", 2),  # private non-enterprise unit
)
_ORG_DIGITS = "0123456789"
_ORG_TAIL = "0123456789ABCDEFGHJKLMNPQRTUWXY"


def make_uscc(rng: random.Random, area: str, *, kind: str | None = None) -> str:
    """A valid unified social credit code registered in ``area`` (6 digits, e.g. ``310115``).

    ``kind`` is the 2-character authority + type prefix (default: weighted, mostly ``91`` enterprises).
    The embedded organisation code satisfies GB 11714: either an old all-digit code or a post-2015
    ``MA``-style code.
    """
    if len(area) != 6 or not area.isdigit():
        raise ValueError(f"{area!r} is not a 6-digit area code")
    if kind is None:
        kind = rng.choices([k for k, _ in _USCC_KINDS], weights=[w for _, w in _USCC_KINDS])[0]
    if len(kind) != 2 or kind[0] not in _USCC_AUTHORITIES or not kind[1].isdigit() or kind[1] == "0":
        raise ValueError(f"{kind!r} is not a registration authority + organisation type prefix")
    while True:
        if rng.random() < 0.5:
            org = "".join(rng.choice(_ORG_DIGITS) for _ in range(8))
        else:
            org = "MA" + "".join(rng.choice(_ORG_TAIL) for _ in range(6))
        org += organization_code_check_char(org)
        if all(c in _USCC_VALUE for c in org):
            break
    body = kind + area + org
    return body + uscc_check_char(body)


# Mobile number segments in use in mainland China (China Mobile, Unicom, Telecom, Broadnet).
_PHONE_PREFIXES = (
    "130 131 132 133 134 135 136 137 138 139 150 151 152 153 155 156 157 158 159 "
    "166 172 173 175 176 177 178 180 181 182 183 184 185 186 187 188 189 191 193 195 198 199".split()
)


def make_phone(rng: random.Random) -> str:
    """An 11-digit mainland mobile number in a real operator segment."""
    return rng.choice(_PHONE_PREFIXES) + f"{rng.randrange(10**8):08d}"


# Common surnames, roughly by frequency (weights), and characters common in given names.
_SURNAMES = (
    ("王", 72), ("李", 70), ("张", 68), ("刘", 53), ("陈", 45), ("杨", 31), ("黄", 23), ("赵", 20),
    ("吴", 19), ("周", 19), ("徐", 15), ("孙", 15), ("马", 13), ("朱", 13), ("胡", 12), ("郭", 11),
    ("何", 11), ("林", 10), ("高", 10), ("罗", 10), ("郑", 9), ("梁", 9), ("谢", 8), ("宋", 7),
    ("唐", 7), ("许", 7), ("韩", 7), ("冯", 7), ("邓", 7), ("曹", 6), ("彭", 6), ("曾", 6),
    ("沈", 5), ("顾", 4), ("陆", 4), ("蒋", 4), ("姚", 4), ("钱", 3), ("潘", 3), ("严", 2),
    ("欧阳", 1), ("司马", 1), ("上官", 1), ("诸葛", 1),
)  # fmt: skip
_GIVEN_CHARS = (
    "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚桂英华建文辉玲鹏飞宇浩然子涵欣怡梓轩雨萱"
    "思远佳琪晨阳嘉怡俊杰婷婷志强海燕晓东春梅国庆立新红卫振华建国秋云丹丹小龙一鸣博文"
)


def make_chinese_name(rng: random.Random) -> str:
    """A plausible Chinese personal name: a common surname and a one- or two-character given name."""
    surname = rng.choices([s for s, _ in _SURNAMES], weights=[w for _, w in _SURNAMES])[0]
    length = 1 if rng.random() < 0.3 else 2
    return surname + "".join(rng.choice(_GIVEN_CHARS) for _ in range(length))
