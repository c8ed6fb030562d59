"""hub.identifiers: district codes, GB 11643 resident IDs, GB 32100 USCCs, masking and generators."""

from __future__ import annotations

import random
from datetime import date

import pytest

from hub import identifiers as ids
from hub.identifiers import (
    DISTRICT_CODES,
    DISTRICTS,
    RETIRED_CODES,
    is_district_code,
    is_valid_resident_id,
    is_valid_uscc,
    make_chinese_name,
    make_phone,
    make_resident_id,
    make_uscc,
    mask_name,
    mask_phone,
    mask_resident_id,
    normalize_resident_id,
    normalize_uscc,
    organization_code_check_char,
    resident_id_birth_date,
    resident_id_check_char,
    resident_id_district,
    resident_id_sex,
    uscc_check_char,
)

PUDONG_EXAMPLE = "310115198807061234"  # docs/domain.md
BEIJING_EXAMPLE = "11010519491231002X"  # docs/domain.md, GB 11643 appendix
USCC_EXAMPLES = ("91110000600037341L", "91350100M000100Y43")  # docs/domain.md

DOMAIN_TABLE = {
    "310101": "Huangpu", "310104": "Xuhui", "310105": "Changning", "310106": "Jing'an",
    "310107": "Putuo", "310109": "Hongkou", "310110": "Yangpu", "310112": "Minhang",
    "310113": "Baoshan", "310114": "Jiading", "310115": "Pudong", "310116": "Jinshan",
    "310117": "Songjiang", "310118": "Qingpu", "310120": "Fengxian", "310151": "Chongming",
}  # fmt: skip
DOMAIN_RETIRED = ("310102", "310103", "310108", "310119", "310225", "310230")


def with_check(first17: str) -> str:
    return first17 + resident_id_check_char(first17)


def wrong_check(valid: str) -> list[str]:
    return [valid[:17] + c for c in "0123456789X" if c != valid[17]]


# --- districts ----------------------------------------------------------------------------------------


def test_sixteen_live_districts_match_domain_table() -> None:
    assert len(DISTRICTS) == 16
    assert {code: d.name_en for code, d in DISTRICTS.items()} == DOMAIN_TABLE
    assert DISTRICTS["310115"].name_zh == "浦东新区"
    assert DISTRICTS["310151"].name_zh == "崇明区"
    assert all(d.code == code for code, d in DISTRICTS.items())
    assert set(DISTRICT_CODES) == set(DOMAIN_TABLE)


def test_retired_codes_are_not_live_but_have_live_successors() -> None:
    assert set(DOMAIN_RETIRED) <= set(RETIRED_CODES)
    for code, retired in RETIRED_CODES.items():
        assert not is_district_code(code)
        assert retired.successor in DISTRICTS
        assert code not in DISTRICTS


def test_is_district_code() -> None:
    assert is_district_code("310115")
    assert not is_district_code("310103")
    assert not is_district_code("110105")
    assert not is_district_code(310115)
    assert not is_district_code("")


def test_mappings_are_read_only() -> None:
    with pytest.raises(TypeError):
        DISTRICTS["310199"] = DISTRICTS["310101"]  # type: ignore[index]


# --- resident IDs -------------------------------------------------------------------------------------


def test_domain_examples_are_valid() -> None:
    assert is_valid_resident_id(PUDONG_EXAMPLE)
    assert is_valid_resident_id(BEIJING_EXAMPLE)
    assert resident_id_check_char(PUDONG_EXAMPLE[:17]) == "4"
    assert resident_id_check_char(BEIJING_EXAMPLE[:17]) == "X"


def test_check_char_formula_by_hand() -> None:
    # 11010519491231002: sum(a_i * w_i) = 167, 167 mod 11 = 2 -> "10X98765432"[2] == "X"
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    total = sum(int(c) * w for c, w in zip("11010519491231002", weights, strict=True))
    assert total % 11 == 2
    assert resident_id_check_char("11010519491231002") == "X"


@pytest.mark.parametrize("bad", ["1101051949123100", "110105194912310021", "1101051949123100X", "a" * 17, ""])
def test_check_char_rejects_bad_input(bad: str) -> None:
    with pytest.raises(ValueError):
        resident_id_check_char(bad)


@pytest.mark.parametrize("code", sorted(DOMAIN_TABLE))
def test_every_district(code: str) -> None:
    rid = with_check(f"{code}19800229123")
    assert is_valid_resident_id(rid)
    assert resident_id_district(rid) == code
    for bad in wrong_check(rid):
        assert not is_valid_resident_id(bad)
        assert resident_id_district(bad) is None
    rng = random.Random(code)
    for _ in range(50):
        generated = make_resident_id(rng, code)
        assert generated.startswith(code)
        assert is_valid_resident_id(generated)
        assert resident_id_district(generated) == code


@pytest.mark.parametrize("code", sorted(RETIRED_CODES))
def test_retired_codes_valid_in_ids_and_map_to_successor(code: str) -> None:
    rid = with_check(f"{code}19650315042")
    assert is_valid_resident_id(rid)
    assert resident_id_district(rid) == RETIRED_CODES[code].successor
    generated = make_resident_id(random.Random(1), code)
    assert is_valid_resident_id(generated)
    assert int(generated[6:10]) < RETIRED_CODES[code].retired


def test_district_of_non_shanghai_is_none() -> None:
    assert resident_id_district(BEIJING_EXAMPLE) is None
    assert resident_id_district(with_check("32050219900101001")) is None  # Suzhou
    assert resident_id_district(with_check("31000019900101001")) is None  # Shanghai, not a district
    assert resident_id_district(None) is None
    assert resident_id_district("310115") is None


def test_every_wrong_check_char_is_rejected() -> None:
    for valid in (PUDONG_EXAMPLE, BEIJING_EXAMPLE):
        rejected = wrong_check(valid)
        assert len(rejected) == 10
        assert not any(is_valid_resident_id(s) for s in rejected)


def test_single_digit_typos_are_caught() -> None:
    for i in range(17):
        for d in "0123456789":
            if d == PUDONG_EXAMPLE[i]:
                continue
            typo = PUDONG_EXAMPLE[:i] + d + PUDONG_EXAMPLE[i + 1 :]
            assert not is_valid_resident_id(typo), typo


@pytest.mark.parametrize(
    "birth",
    [
        "19870229",  # not a leap year
        "19000229",  # century, not a leap year
        "19881301",  # month 13
        "19880001",  # month 0
        "19880431",  # April has 30 days
        "19880700",  # day 0
        "17991231",  # before 1800
        "00000000",
    ],
)
def test_bad_birth_dates(birth: str) -> None:
    assert not is_valid_resident_id(with_check(f"310115{birth}123"))


def test_leap_days_are_real_dates() -> None:
    assert is_valid_resident_id(with_check("31011520000229123"))
    assert is_valid_resident_id(with_check("31011519960229123"))


def test_future_birth_date_rejected() -> None:
    rid = with_check("31011520300101123")
    assert not is_valid_resident_id(rid)
    assert is_valid_resident_id(rid, today=date(2030, 1, 1))
    assert not is_valid_resident_id(rid, today=date(2029, 12, 31))


def test_lowercase_x() -> None:
    lower = BEIJING_EXAMPLE.lower()
    assert lower.endswith("x")
    assert is_valid_resident_id(lower)
    assert not is_valid_resident_id(lower, strict=True)
    assert is_valid_resident_id(BEIJING_EXAMPLE, strict=True)
    assert normalize_resident_id(f"  {lower} ") == BEIJING_EXAMPLE


@pytest.mark.parametrize(
    "value",
    [
        "",
        "31011519880706123",  # 17
        "3101151988070612345",  # 19
        "310115880706123",  # old 15-digit format
        " 310115198807061234",
        "310115198807061234 ",
        "3101151988070612X4",  # X in the body
        "３１０１１５１９８８０７０６１２３４",  # full-width digits
        "000000198807061230",  # not a province
        "99011519880706123X",
        "31011519880706123Y",
    ],
)
def test_malformed_rejected(value: str) -> None:
    assert not is_valid_resident_id(value)


def test_non_strings_rejected() -> None:
    assert not is_valid_resident_id(None)
    assert not is_valid_resident_id(310115198807061234)
    assert not is_valid_resident_id(b"310115198807061234")


def test_birth_date_and_sex() -> None:
    assert resident_id_birth_date(PUDONG_EXAMPLE) == date(1988, 7, 6)
    assert resident_id_sex(PUDONG_EXAMPLE) == "M"  # sequence 123: odd
    assert resident_id_sex(BEIJING_EXAMPLE) == "F"  # sequence 002: even
    assert resident_id_birth_date("310115198807061233") is None
    assert resident_id_sex("nonsense") is None


def test_make_resident_id_options() -> None:
    rng = random.Random(7)
    rid = make_resident_id(rng, "310104", born=date(1990, 5, 17), sex="F")
    assert rid[6:14] == "19900517" and int(rid[16]) % 2 == 0 and is_valid_resident_id(rid)
    for _ in range(100):
        assert resident_id_sex(make_resident_id(rng, "310110", sex="M")) == "M"
        assert resident_id_sex(make_resident_id(rng, "310110", sex="F")) == "F"
    assert is_valid_resident_id(make_resident_id(rng, "110105"))
    for bad in ("31011", "3101150", "abcdef", "000000"):
        with pytest.raises(ValueError):
            make_resident_id(rng, bad)
    with pytest.raises(ValueError):
        make_resident_id(rng, "310115", sex="X")


def test_generators_are_reproducible() -> None:
    def batch(seed: int) -> list[str]:
        rng = random.Random(seed)
        return [
            make_resident_id(rng, "310115")
            + make_uscc(rng, "310115")
            + make_phone(rng)
            + make_chinese_name(rng)
            for _ in range(20)
        ]

    assert batch(42) == batch(42)
    assert batch(42) != batch(43)


# --- USCC ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", USCC_EXAMPLES)
def test_uscc_domain_examples(code: str) -> None:
    assert is_valid_uscc(code)
    assert uscc_check_char(code[:17]) == code[17]
    assert is_valid_uscc(code.lower())
    assert not is_valid_uscc(code.lower(), strict=True)
    assert normalize_uscc(f" {code[:2]}-{code[2:8]} {code[8:].lower()}") == code


@pytest.mark.parametrize("code", USCC_EXAMPLES)
def test_uscc_wrong_check_char_rejected(code: str) -> None:
    others = [c for c in ids.USCC_ALPHABET if c != code[17]]
    assert len(others) == 30
    assert not any(is_valid_uscc(code[:17] + c) for c in others)


def test_uscc_formula_by_hand() -> None:
    alphabet = "0123456789ABCDEFGHJKLMNPQRTUWXY"
    weights = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
    total = sum(alphabet.index(c) * w for c, w in zip("91350100M000100Y4", weights, strict=True))
    assert alphabet[(31 - total % 31) % 31] == "3"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "91110000600037341",  # 17
        "91110000600037341LL",  # 19
        "01110000600037341L",  # authority 0 does not exist
        "B1110000600037341L",  # authority B does not exist
        "90110000600037341L",  # type 0 does not exist
        "9111000O600037341L",  # letter in the area code
        "91110000600O37341L",  # O is not in the alphabet
        "91110000I00037341L",  # I is not in the alphabet
        "91110000600037341Z",  # Z is not in the alphabet
        " 91110000600037341L",
    ],
)
def test_uscc_malformed_rejected(value: str) -> None:
    assert not is_valid_uscc(value)


def test_uscc_non_strings_rejected() -> None:
    assert not is_valid_uscc(None)
    assert not is_valid_uscc(91110000600037341)


def test_uscc_check_char_rejects_bad_input() -> None:
    for bad in ("9111000060003734", "9111000060003734IL", "91110000600O37341"):
        with pytest.raises(ValueError):
            uscc_check_char(bad)


def test_uscc_other_authorities_accepted() -> None:
    for prefix in ("Y1", "N2", "A1", "51", "12"):
        body = prefix + "310115" + "MA1K3P7X4"
        assert is_valid_uscc(body + uscc_check_char(body))


def test_organization_code_examples() -> None:
    # the organisation codes embedded in the docs/domain.md examples are GB 11714-valid
    assert organization_code_check_char("60003734") == "1"
    assert organization_code_check_char("M000100Y") == "4"
    with pytest.raises(ValueError):
        organization_code_check_char("6000373")


@pytest.mark.parametrize("area", sorted(DOMAIN_TABLE) + ["310000", "110000"])
def test_make_uscc(area: str) -> None:
    rng = random.Random(area)
    for _ in range(50):
        code = make_uscc(rng, area)
        assert is_valid_uscc(code, strict=True)
        assert code[2:8] == area
        assert organization_code_check_char(code[8:16]) == code[16]
    assert make_uscc(rng, area, kind="92")[:2] == "92"
    with pytest.raises(ValueError):
        make_uscc(rng, area, kind="00")
    with pytest.raises(ValueError):
        make_uscc(rng, "31011")


# --- masking ------------------------------------------------------------------------------------------


def test_mask_domain_examples() -> None:
    assert mask_resident_id(PUDONG_EXAMPLE) == "310115********1234"
    assert mask_phone("13912345678") == "139****5678"
    assert mask_name("张三丰") == "张**"


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("11010519491231002X", "110105********002X"),
        ("310115880706123", "310115*****6123"),  # old 15-digit number
        ("", ""),
        ("1", "*"),
        ("1234", "***4"),
        ("12345678", "******78"),
        ("3101151988", "********88"),
    ],
)
def test_mask_resident_id_odd_inputs(value: str, masked: str) -> None:
    assert mask_resident_id(value) == masked
    assert len(mask_resident_id(value)) == len(value)


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("+8613912345678", "+86139****5678"),
        ("+86 139 1234 5678", "+86 139 **** 5678"),
        ("139-1234-5678", "139-****-5678"),
        ("021-62345678", "021-****5678"),
        ("62345678", "****5678"),
        ("12345", "*****"),
        ("", ""),
        ("n/a", "n/a"),
    ],
)
def test_mask_phone_odd_inputs(value: str, masked: str) -> None:
    assert mask_phone(value) == masked


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("张三", "张*"),
        ("张", "*"),
        ("", ""),
        ("  李小龙 ", "李**"),
        ("欧阳娜娜", "欧阳**"),
        ("欧阳", "欧*"),
        ("阿依古丽·买买提", "阿***·***"),
        ("John Smith", "J*** *****"),
    ],
)
def test_mask_name_odd_inputs(value: str, masked: str) -> None:
    assert mask_name(value) == masked


# --- generators ---------------------------------------------------------------------------------------


def test_make_phone() -> None:
    rng = random.Random(3)
    for _ in range(200):
        phone = make_phone(rng)
        assert len(phone) == 11 and phone.isdigit() and phone[0] == "1"
        assert mask_phone(phone) == phone[:3] + "****" + phone[-4:]


def test_make_chinese_name() -> None:
    rng = random.Random(5)
    names = [make_chinese_name(rng) for _ in range(500)]
    assert all(2 <= len(n) <= 4 for n in names)
    assert all("\u4e00" <= c <= "\u9fff" for n in names for c in n)
    assert len(set(names)) > 300
    assert all(mask_name(n)[0] == n[0] and set(mask_name(n)[1:]) <= {"*", n[1]} for n in names)


# --- agreement with python-stdnum -------------------------------------------------------------------


def test_resident_id_agrees_with_stdnum() -> None:
    ric = pytest.importorskip("stdnum.cn.ric")
    rng = random.Random(11)
    for _ in range(2000):
        first17 = "".join(rng.choice("0123456789") for _ in range(17))
        assert resident_id_check_char(first17) == ric.calc_check_digit(first17 + "0")
    # Where stdnum's birth-place-by-year rule does not apply (codes valid since before 1982, births after
    # the ID system began), both accept the same valid numbers and reject the same bad check characters.
    for code in ("310101", "310104", "310105", "310106", "310107", "310109", "310110"):
        for _ in range(50):
            rid = make_resident_id(rng, code, born=date(rng.randint(1985, 2020), rng.randint(1, 12), 1))
            assert ric.is_valid(rid) and is_valid_resident_id(rid)
            for bad in wrong_check(rid):
                assert not ric.is_valid(bad) and not is_valid_resident_id(bad)
    assert ric.is_valid(BEIJING_EXAMPLE)


def test_resident_id_documented_differences_from_stdnum() -> None:
    ric = pytest.importorskip("stdnum.cn.ric")
    # stdnum compares the birth year with the area code's validity; the code is assigned at registration,
    # so a Pudong number (310115 exists since 1992) of someone born in 1988 is valid: docs/domain.md's example.
    assert not ric.is_valid(PUDONG_EXAMPLE)
    assert is_valid_resident_id(PUDONG_EXAMPLE)
    # stdnum accepts future birth dates; the hub does not.
    future = with_check("31010121000101123")
    assert ric.is_valid(future)
    assert not is_valid_resident_id(future)


def test_uscc_agrees_with_stdnum() -> None:
    uscc = pytest.importorskip("stdnum.cn.uscc")
    rng = random.Random(13)
    for code in USCC_EXAMPLES:
        assert uscc.is_valid(code)
    for _ in range(2000):
        body = rng.choice("123456789") + rng.choice("123456789") + f"{rng.randrange(10**6):06d}"
        body += "".join(rng.choice(ids.USCC_ALPHABET) for _ in range(9))
        assert uscc_check_char(body) == uscc.calc_check_digit(body)
        check = rng.choice(ids.USCC_ALPHABET)
        assert is_valid_uscc(body + check) == uscc.is_valid(body + check)
    for area in DOMAIN_TABLE:
        code = make_uscc(rng, area)
        assert uscc.is_valid(code)
    # documented difference: authority Y ("other") is valid in GB 32100, stdnum requires a digit
    body = "Y1310115MA1K3P7X4"
    assert is_valid_uscc(body + uscc_check_char(body))
    assert not uscc.is_valid(body + uscc_check_char(body))
