"""The one way aevb writes a number of bytes and a duration."""
import pytest

from aevb.units import format_bytes, format_bytes_apart, format_duration


@pytest.mark.parametrize("n, digits, want", [
    (0, 1, "0 B"), (999, 1, "999 B"), (1000, 1, "1.0 kB"), (12_345, 1, "12.3 kB"), (999_949, 1, "999.9 kB"),
    (999_960, 1, "1.0 MB"), (54_123_456_789, 1, "54.1 GB"), (1_216_000, 3, "1.216 MB"), (2.5e12, 1, "2.5 TB"),
    (10**18, 1, "1.0 EB"), (3 * 10**21, 1, "3000.0 EB"), (-2_000_000, 1, "-2.0 MB"),
])
def test_bytes_are_written_in_the_largest_decimal_unit(n, digits, want):
    assert format_bytes(n, digits) == want


def test_two_different_sizes_are_written_apart():
    assert format_bytes_apart(912_345, 905_000) == ("912.3 kB", "905.0 kB")
    assert format_bytes_apart(912_345, 912_300) == ("912.35 kB", "912.30 kB")
    assert format_bytes_apart(5_000_000, 5_000_000) == ("5.0 MB", "5.0 MB")
    assert format_bytes_apart(10**12 + 1, 10**12) == ("1000000000001 B", "1000000000000 B")


@pytest.mark.parametrize("s, want", [
    (0, "0 s"), (-3, "0 s"), (44.6, "45 s"), (89.4, "89 s"), (90, "2 min"), (725, "12 min"), (5399, "90 min"),
    (5400, "1.5 h"), (2 * 86400 - 1, "48.0 h"), (2 * 86400, "2 days"), (400 * 86400, "400 days"),
    (4000 * 86400, "4,000 days"),
])
def test_durations_are_written_to_about_two_figures(s, want):
    assert format_duration(s) == want
