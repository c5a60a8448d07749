"""Avaatech .spe reading: format variants, length fitting, malformed files naming their line, the writer."""

import numpy as np
import pytest

from coremax.data.spe import format_spe, parse_spe, read_spe, write_spe
from coremax.errors import UserError

FULL = """$SPEC_ID:
SO202-37-2 937
$SPEC_REM:
head B
$DATE_MEA:
03-14-2019 10:22:05
$MEAS_TIM:
10 11
$ACC_VOLT:
10
$TUBE_CUR:
1,000
$Core_ID:
SO202-37-2
$Section_ID:
0937
$Depth:
10,5
$Run_ID:
1
$X_Position:
10.0
$Y_Position:
0
$Replicate_ID:
1
$Slit_DC:
10
$Slit_CC:
12
$TotalCPS:
12345
$USER_ID:
lab
$SOMETHING_NEW:
an unknown key
$DATA:
0 {last}
{counts}
"""

# Older heads: about 20 header lines, most keys absent.
SHORT = """$SPEC_ID:
old head
$SPEC_REM:
$DATE_MEA:
05-02-2006 08:00:00
$MEAS_TIM:
30 32
$DATA:
0 {last}
{counts}
"""

COUNTS = np.arange(2048) % 97 * 3


def spe_text(template=FULL, counts=COUNTS, per_line=1, newline="\n"):
    rows = [" ".join(map(str, counts[i:i + per_line])) for i in range(0, len(counts), per_line)]
    return template.format(last=len(counts) - 1, counts="\n".join(rows)).replace("\n", newline)


@pytest.mark.parametrize("per_line", [1, 8, 2048])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_full_header_any_counts_per_line_and_crlf(per_line, newline):
    meta, counts = parse_spe(spe_text(per_line=per_line, newline=newline))
    assert np.array_equal(counts, COUNTS)
    assert meta["live_time_s"] == 10 and meta["real_time_s"] == 11 and meta["kv"] == 10
    assert meta["current_ma"] == 1.0 and meta["header_depth"] == 10.5  # decimal commas
    assert meta["slit_dc_mm"] == 10 and meta["slit_cc_mm"] == 12 and meta["total_cps"] == 12345
    assert meta["x_position"] == 10.0 and meta["y_position"] == 0
    assert meta["date"] == "2019-03-14T10:22:05" and meta["spec_rem"] == "head B"
    assert meta["core_id"] == "SO202-37-2" and meta["section_id"] == "0937"
    assert meta["spectrum_length"] == 2048


def test_decimal_comma_counts_are_read():
    text = spe_text(counts=COUNTS).replace("\n3\n", "\n3,0\n", 1)
    _, counts = parse_spe(text)
    assert np.array_equal(counts, COUNTS)


def test_short_header_with_missing_and_empty_keys():
    meta, counts = parse_spe(spe_text(SHORT, newline="\r\n"))
    assert meta["live_time_s"] == 30 and meta["real_time_s"] == 32
    assert np.isnan(meta["kv"]) and np.isnan(meta["slit_cc_mm"]) and meta["core_id"] == "" and meta["spec_rem"] == ""
    assert np.array_equal(counts, COUNTS)


def test_keys_are_found_by_name_not_position():
    text = spe_text().replace("$Run_ID:\n1\n", "").replace("$ACC_VOLT:\n10\n", "")
    text = text.replace("$USER_ID:", "$ACC_VOLT:\n30\n$USER_ID:")  # moved to another place
    meta, _ = parse_spe(text)
    assert meta["run_id"] == "" and meta["kv"] == 30 and meta["total_cps"] == 12345 and meta["user_id"] == "lab"


def test_shorter_spectrum_is_zero_padded_at_the_high_energy_end():
    short = COUNTS[:1024] + 1
    meta, counts = parse_spe(spe_text(counts=short, per_line=16))
    assert len(counts) == 2048 and meta["spectrum_length"] == 1024
    assert np.array_equal(counts[:1024], short) and not counts[1024:].any()


def test_longer_spectrum_is_refused_unless_its_tail_is_zero():
    with pytest.raises(UserError, match=r"long\.spe: 4096 channels with counts beyond channel 2047"):
        parse_spe(spe_text(counts=np.ones(4096, int)), "long.spe")
    meta, counts = parse_spe(spe_text(counts=np.r_[COUNTS, np.zeros(2048, int)]))
    assert np.array_equal(counts, COUNTS) and meta["spectrum_length"] == 4096
    meta, counts = parse_spe(spe_text(counts=np.ones(4096, int)), spectrum_length=4096)
    assert len(counts) == 4096


# Line numbers in FULL: $ACC_VOLT: is line 9 (its value line 10), $DATA: line 37, the range line 38, channel 0
# on line 39 (so channel 12, holding 36, on line 51).
@pytest.mark.parametrize("damage, message", [
    (lambda t: t.replace("\n36\n", "\n3x6\n", 1), r"bad\.spe, line 51: '3x6' is not a count"),
    (lambda t: t.replace("$DATA:\n0 2047", "$DATA:\n0 3000"), r"bad\.spe, line 38: the channel range says 3001"),
    (lambda t: t.replace("$DATA:\n0 2047", "$DATA:\nzero"), r"bad\.spe, line 38: expected the channel range"),
    (lambda t: t.replace("$DATA:", "$DATTA:"), r"bad\.spe: no \$DATA: line"),
    (lambda t: t.replace("$ACC_VOLT:\n10", "$ACC_VOLT:\nten"),
     r"bad\.spe, line 10: cannot read a number for \$ACC_VOLT"),
    (lambda t: "garbage\n" + t, r"bad\.spe, line 1: text 'garbage' before the first \$KEY"),
    (lambda t: t.replace("\n36\n", "\n-36\n", 1), r"bad\.spe: channel 12 holds -36"),
])
def test_malformed_file_names_file_and_line(damage, message):
    with pytest.raises(UserError, match=message):
        parse_spe(damage(spe_text()), "bad.spe")


def test_writer_round_trip_in_the_scanner_layout(tmp_path):
    counts = np.random.default_rng(0).poisson(50, 2048).astype(float)
    meta = {"live_time_s": 10.0, "real_time_s": 10.8, "kv": 10.0, "current_ma": 0.15, "core_id": "X",
            "slit_cc_mm": 12.0, "total_cps": counts.sum() / 10, "spec_rem": "head C", "date": "2019-03-14T10:22:05"}
    path = write_spe(tmp_path / "a.spe", counts, meta, per_line=5)
    back, c = read_spe(path)
    assert np.array_equal(c, counts) and back["kv"] == 10 and back["current_ma"] == 0.15
    assert back["date"] == meta["date"] and back["real_time_s"] == 10.8 and back["spec_rem"] == "head C"
    raw = path.read_bytes().decode()
    assert "\r\n" in raw and "$DATA:\r\n0 2047\r\n" in raw
    assert "$Run_ID:" not in format_spe(counts, meta)  # empty keys are left out, as the scanner does
    assert [p.name for p in tmp_path.iterdir()] == ["a.spe"]  # no temporary file left behind


def test_unreadable_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="missing.spe: cannot be read"):
        read_spe(tmp_path / "missing.spe")


@pytest.mark.parametrize("bad", ["1e39", "2.5", "inf", "99999999999"])
def test_absurd_counts_are_refused(bad):
    text = "$SPEC_ID:\nx\n$DATA:\n0 3\n1 2 " + bad + " 4\n"
    with pytest.raises(UserError, match="channel 2 holds"):
        parse_spe(text, "f.spe", 4)


def test_empty_channel_range_is_refused():
    with pytest.raises(UserError, match="holds no channels"):
        parse_spe("$DATA:\n0 -1\n", "f.spe", 4)


def test_a_spectrum_far_shorter_than_expected_is_refused():
    with pytest.raises(UserError, match="only 4 channels"):
        parse_spe("$SPEC_ID:\nx\n$DATA:\n0 3\n1 2 3 4\n", "junk.spe", 2048)
