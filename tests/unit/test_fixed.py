"""Fixed point: exact parsing and formatting against decimal.Decimal."""
from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from obitui.core.fixed import decimals_of, format_fixed, parse_fixed, parse_fixed_decimals

INT64_MAX = 2**63 - 1


def test_exchange_strings() -> None:
    assert parse_fixed("27000.01000000") == 2_700_001_000_000
    assert parse_fixed("27000.01") == 2_700_001_000_000
    assert parse_fixed(b"0.00000001") == 1
    assert parse_fixed("0") == 0
    assert parse_fixed("0.00000000") == 0
    assert parse_fixed("0.500000000") == 50_000_000  # trailing zeros beyond digits are exact
    assert parse_fixed("30000.96", 2) == 3_000_096
    assert parse_fixed("123", 0) == 123
    assert parse_fixed_decimals("0.5000") == (50_000_000, 4)
    assert decimals_of("100.10") == 2


@pytest.mark.parametrize("text", [
    "", "-1", "+1", "1e5", "1E5", "1.5e-3", "abc", "1.2.3", " 1", "1 ", "1,5", ".5", "5.",
    ".", "-", "0x10", "1.000000001", "92233720368.54775808", "99999999999999999999",
    "١٢٣", "NaN", "inf", "1_000",
])
def test_rejects_with_a_message_naming_the_input(text: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_fixed(text, 8)
    assert repr(text) in str(err.value)


def test_sign_only_when_asked() -> None:
    assert parse_fixed("-0.5", 8, signed=True) == -50_000_000
    with pytest.raises(ValueError):
        parse_fixed("-0.5", 8)


def test_int64_limits() -> None:
    assert parse_fixed("92233720368.54775807", 8) == INT64_MAX
    with pytest.raises(ValueError, match="too large"):
        parse_fixed("92233720368.54775808", 8)
    assert parse_fixed("9223372036854775807", 0) == INT64_MAX
    with pytest.raises(ValueError):
        parse_fixed("1", 19)


def test_type_errors() -> None:
    with pytest.raises(TypeError):
        parse_fixed(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        format_fixed(1.5, 8, 2)  # type: ignore[arg-type]


def test_format() -> None:
    assert format_fixed(50_000_000, 8, 4) == "0.5000"
    assert format_fixed(2_700_001_000_000, 8, 8) == "27000.01000000"
    assert format_fixed(2_700_001_000_000, 8, 2) == "27000.01"
    assert format_fixed(2_700_000_000_000, 8, 0) == "27000"
    assert format_fixed(50_000_000, 8, 10) == "0.5000000000"
    assert format_fixed(-1, 8, 8) == "-0.00000001"
    assert format_fixed(0, 0, 0) == "0"
    with pytest.raises(ValueError):
        format_fixed(2_700_001_000_000, 8, 1)  # would drop the 1 cent
    with pytest.raises(ValueError):
        format_fixed(2**63, 8, 8)


decimal_strings = st.builds(
    lambda i, frac, zeros: (str(i) + ("." + frac if frac else "")) + ("0" * zeros if frac else ""),
    st.integers(min_value=0, max_value=10**10),
    st.text(alphabet="0123456789", max_size=8),
    st.integers(min_value=0, max_value=4),
)


@given(decimal_strings)
@settings(max_examples=2000, deadline=None)
def test_parse_matches_decimal_and_round_trips(text: str) -> None:
    value, decimals = parse_fixed_decimals(text, 8)
    assert value == int(Decimal(text) * 10**8)
    assert format_fixed(value, 8, decimals) == text


@given(st.integers(min_value=0, max_value=18), st.integers(min_value=-(2**63) + 1, max_value=INT64_MAX),
       st.integers(min_value=0, max_value=24))
@settings(max_examples=2000, deadline=None)
def test_format_matches_decimal(digits: int, value: int, decimals: int) -> None:
    exact = Decimal(value).scaleb(-digits)
    if decimals < digits and value % 10 ** (digits - decimals):
        with pytest.raises(ValueError):
            format_fixed(value, digits, decimals)
        return
    text = format_fixed(value, digits, decimals)
    assert Decimal(text) == exact
    assert len(text.partition(".")[2]) == decimals
    assert parse_fixed(text, digits, signed=True) == value


@given(st.binary(max_size=40))
@settings(max_examples=2000, deadline=None)
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    try:
        value = parse_fixed(data, 8)
    except ValueError:
        return
    assert 0 <= value <= INT64_MAX
    assert Decimal(data.decode()) * 10**8 == value
