"""Command-line errors: bad seeds and memory budgets, and system errors such as a full disk, end in one sentence."""

import pytest

from coremax.errors import UserError


def test_seeds_memory_budgets_and_system_errors_end_in_one_sentence(capsys):
    import errno

    from coremax import config as configlib
    from coremax.cli.common import guard

    for bad in ("experiment.seed=200000000000000", "data.max_memory_gb=nan", "data.max_memory_gb=-1"):
        with pytest.raises(UserError, match=bad.split("=")[0]):
            configlib.resolve(None, [bad])

    @guard
    def full_disk():
        raise OSError(errno.ENOSPC, "No space left on device", "/data/x.pth")

    with pytest.raises(SystemExit) as exit_:
        full_disk()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "free some space" in err and "Traceback" not in err and "/data/x.pth" in err
