"""Result signing: the key is private from the start, and a bad signature makes an untrusted pickle."""

import pandas as pd
import pytest

from coremax.errors import UserError


def test_the_signing_key_is_private_from_the_start_and_short_or_open_keys_are_refused(tmp_path, monkeypatch):
    import os
    import stat

    from coremax import io

    key = tmp_path / "keys" / "results.key"
    monkeypatch.setenv(io.KEY_ENV, str(key))
    first = io._key()
    assert len(first) == io.KEY_BYTES and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700 and io._key() == first
    assert [p.name for p in key.parent.iterdir()] == ["results.key"]  # no temporary file left behind
    os.chmod(key, 0o644)
    with pytest.raises(UserError, match="chmod 600"):
        io._key()
    os.chmod(key, 0o600)
    key.write_bytes(b"short")
    with pytest.raises(UserError, match="fewer than 32"):
        io._key()


def test_a_non_ascii_signature_is_an_untrusted_pickle_not_a_traceback(tmp_path):
    from coremax.io import UntrustedPickle, read_pickle, write_pickle

    path = tmp_path / "results" / "x.pkl"
    write_pickle(path, pd.DataFrame({"a": [1]}))
    path.with_name("x.pkl.hmac").write_bytes("é∂ƒ".encode("utf-8"))
    with pytest.raises(UntrustedPickle):
        read_pickle(tmp_path, path)
