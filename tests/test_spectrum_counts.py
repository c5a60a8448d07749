"""Spectrum counts keep every digit: exact integers from .spe parsing through read_folder, the $DATA: range start."""

import pytest

from coremax.errors import UserError


def _spe(counts_text: str, header_extra: str = "", data_range: str = "0 3") -> str:
    return (f"$SPEC_ID:\nx\n$MEAS_TIM:\n10 12\n$ACC_VOLT:\n10\n{header_extra}$DATA:\n{data_range}\n{counts_text}\n")


def test_counts_keep_every_digit_and_the_range_start():
    import numpy as np

    from coremax.data.spe import parse_spe

    _, counts = parse_spe(_spe("16777217 2147483647 0 5"), "big.spe", spectrum_length=4)
    assert counts.tolist() == [16777217, 2147483647, 0, 5]
    assert np.asarray(counts).astype(np.int32).tolist() == [16777217, 2147483647, 0, 5]  # as read_folder keeps them
    with pytest.raises(UserError, match="not a count"):
        parse_spe(_spe("2147483648 0 0 0"), "over.spe", spectrum_length=4)
    meta, counts = parse_spe(_spe("7 8 9", data_range="1 3"), "from1.spe", spectrum_length=4)
    assert counts.tolist() == [0, 7, 8, 9] and meta["spectrum_length"] == 4
    with pytest.raises(UserError, match="must be finite"):
        parse_spe(_spe("1 2 3 4", "$TUBE_CUR:\n1e999\n"), "inf.spe", spectrum_length=4)


def test_read_folder_stores_counts_as_exact_integers(tmp_path):
    from coremax.data.raw import read_folder

    run = tmp_path / "raw" / "C1" / "Run 1 at  10kV"
    run.mkdir(parents=True)
    (run / "C1_0000    5.0mm  10s  10kV 1000uA F1.spe").write_text(_spe("16777217 3 2 1"))
    _, counts, _ = read_folder(tmp_path / "raw", 10.0, 4, workers=1)
    assert counts.dtype.kind == "i" and counts[0].tolist() == [16777217, 3, 2, 1]
