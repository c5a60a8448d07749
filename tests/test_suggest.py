"""Sample suggestion: which depths of a new core to send to the lab (scripts/suggest.py and the study's
new-cores-labels protocol with chosen rows), and the simulator's dense lab table."""

import hashlib
import shutil

import numpy as np
import pandas as pd
import pytest

from coremax.cli import suggest_main
from coremax.data.dataset import load_split
from coremax.data.spe import format_spe, parse_spe
from coremax.engine.labels import core_label_mask
from coremax.errors import UserError
from coremax.experiment import Experiment
from coremax.io import read_toml
from coremax.suggest import METHODS, choose


def _cores(n_per_core=60, cores=("A", "B"), seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"core": np.repeat(cores, n_per_core),
                          "depth_mm": np.tile(np.arange(n_per_core) * 10.0 + 5, len(cores))})
    features = rng.normal(size=(len(frame), 8)) + np.repeat(rng.normal(size=(len(cores), 8)) * 3, n_per_core, 0)
    width = rng.uniform(1, 3, len(frame))
    return frame, features, width


@pytest.mark.parametrize("method", METHODS)
def test_each_method_returns_n_distinct_spaced_depths_and_is_deterministic(method):
    frame, features, width = _cores()
    sampled = pd.DataFrame({"core": ["A", "B"], "depth_mm": [105.0, 305.0]})
    a = choose(frame, features, 8, method, seed=3, min_gap_mm=30, sampled=sampled, width=width)
    b = choose(frame, features, 8, method, seed=3, min_gap_mm=30, sampled=sampled, width=width)
    assert a.equals(b)  # deterministic for a seed
    assert len(a) == 8 and not a.duplicated(["core", "depth_mm"]).any() and set(a["core"]) <= {"A", "B"}
    assert list(a["rank"]) == list(range(1, 9)) and a["reason"].str.len().gt(0).all()
    for core, part in a.groupby("core"):
        d = np.sort(part["depth_mm"].to_numpy())
        assert (np.diff(d) >= 30).all()  # the spacing rule
        for s in sampled[sampled["core"] == core]["depth_mm"]:
            assert (abs(d - s) >= 30).all()  # kept apart from depths already sampled


@pytest.mark.parametrize("method", METHODS)
def test_per_core_and_candidates(method):
    frame, features, width = _cores()
    candidates = (frame["depth_mm"] % 20 == 5).to_numpy()  # e.g. only depths that have a lab sample
    out = choose(frame, features, 5, method, seed=0, min_gap_mm=0, width=width, candidates=candidates, per_core=True)
    assert (out.groupby("core").size() == 5).all()
    assert candidates[out["row"]].all()
    with pytest.raises(UserError, match="--n"):
        choose(frame, features, 31, method, width=width, candidates=candidates, per_core=True)


def test_methods_choose_what_they_say():
    frame, features, width = _cores(cores=("A",))
    regular = choose(frame, None, 6, "regular", min_gap_mm=0)
    assert np.allclose(np.sort(regular["depth_mm"]), 5 + 590 / 6 * (np.arange(6) + 0.5), atol=10)
    uncertain = choose(frame, features, 3, "uncertain", min_gap_mm=0, width=width)
    assert set(uncertain["row"]) == set(np.argsort(-width)[:3])
    # two tight groups of spectra: typical takes one from each, Kennard-Stone the far outlier first
    f = np.r_[np.zeros((30, 2)), np.ones((29, 2)) * 5, [[40, 40]]] + np.random.default_rng(0).normal(0, 0.1, (60, 2))
    typical = choose(frame, f, 3, "typical", min_gap_mm=0)
    assert set(typical["row"] < 30) == {True, False} and 59 not in set(typical["row"])  # no outlier is typical
    assert choose(frame, f, 1, "diverse", min_gap_mm=0)["row"].iloc[0] == 59
    with pytest.raises(UserError, match="fine-tuned or baseline"):
        choose(frame, f, 2, "uncertain")


def test_chosen_test_rows_replace_the_random_draw_and_are_checked():
    meta = pd.DataFrame({"core": ["a"] * 4 + ["b"] * 3, "CaCO3": [1, 2, np.nan, 4, 5, 6, 7.0],
                         "source_file": [f"f{i}" for i in range(7)]})
    m = core_label_mask(meta, ["CaCO3"], 2, 0, chosen={"f0", "f3", "f5"})
    assert list(np.flatnonzero(m)) == [0, 3, 5]
    with pytest.raises(UserError, match="not a labelled test row"):
        core_label_mask(meta, ["CaCO3"], 2, 0, chosen={"f2"})
    with pytest.raises(UserError, match="more than data.test_labels"):
        core_label_mask(meta, ["CaCO3"], 1, 0, chosen={"f0", "f1"})


# -- the command ------------------------------------------------------------------------------------------------
def _raw(data_root):
    return data_root / "datasets" / "external" / "synthetic" / "raw"


def test_suggest_command_writes_table_and_figures(data_root, pretrained, finetuned, tmp_path, capsys):
    out = tmp_path / "s" / "suggest.csv"
    suggest_main(["--experiment", pretrained, "--raw", str(_raw(data_root)), "--n", "3", "--per-core",
                  "--data-root", str(data_root), "--out", str(out)])
    table = pd.read_csv(out)
    cores = sorted(p.name for p in _raw(data_root).iterdir())
    assert sorted(table["core"].unique()) == cores and (table.groupby("core").size() == 3).all()
    assert {"core", "depth_mm", "section", "position_mm", "source_file", "rank", "reason", "cluster_size"} <= \
        set(table.columns)
    assert all((out.parent / f"suggest-{c}.png").is_file() for c in cores)
    one = _raw(data_root) / cores[0]
    exclude = tmp_path / "sampled.csv"
    table[table["core"] == cores[0]][["core", "depth_mm"]].head(2).to_csv(exclude, index=False)
    out2 = tmp_path / "u.csv"
    suggest_main(["--experiment", finetuned, "--raw", str(one), "--n", "4", "--method", "uncertain",
                  "--exclude", str(exclude), "--min-gap-mm", "25", "--data-root", str(data_root), "--out", str(out2)])
    u = pd.read_csv(out2)
    assert len(u) == 4 and u["interval_width"].notna().all() and "CaCO3_half_width" in u.columns
    for d in pd.read_csv(exclude)["depth_mm"]:
        assert (abs(u["depth_mm"] - d) >= 25).all()


def _other_channels(src, dst, channels):
    for f in src.rglob("*.spe"):
        meta, counts = parse_spe(f.read_bytes(), str(f))
        target = dst / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(format_spe(counts[:channels], meta))


def test_suggest_bad_input_is_one_sentence_and_writes_nothing(data_root, pretrained, tmp_path, capsys):
    raw = _raw(data_root)
    core = sorted(p.name for p in raw.iterdir())[0]
    no_cols = tmp_path / "bad.csv"
    no_cols.write_text("sample,value\n1,2\n")
    short = tmp_path / "short"
    _other_channels(raw / core, short / core, 1024)
    cases = [(["--raw", str(raw / core), "--n", "100000"], "more than the spectra available"),
             (["--raw", str(raw), "--cores", "NOPE-1"], "NOPE-1"),
             (["--raw", str(raw / core), "--exclude", str(no_cols)], "core and depth_mm"),
             (["--raw", str(short)], "channel count"),
             (["--raw", str(raw / core), "--method", "uncertain"], "fine-tuned or baseline")]
    for args, words in cases:
        out = tmp_path / "out" / "s.csv"
        with pytest.raises(SystemExit) as e:
            suggest_main(["--experiment", pretrained, "--data-root", str(data_root), "--out", str(out), *args])
        err = capsys.readouterr().err
        assert e.value.code == 2 and words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert not out.exists()


def test_suggest_refuses_another_tube_voltage(data_root, pretrained, tmp_path, capsys):
    from coremax.data.simulate import simulate_archive

    simulate_archive(tmp_path / "a30", seed=5, cores=1, spacing_mm=50.0, kvs=(30.0,), workers=1)
    with pytest.raises(SystemExit):
        suggest_main(["--experiment", pretrained, "--data-root", str(data_root), "--raw", str(tmp_path / "a30" / "raw"),
                      "--n", "2", "--out", str(tmp_path / "o.csv")])
    assert "30 kV" in capsys.readouterr().err and not (tmp_path / "o.csv").exists()


# -- the study ---------------------------------------------------------------------------------------------------
def test_study_gives_every_method_the_same_suggested_rows(data_root, pretrained):
    from coremax import config as configlib
    from coremax.study import STUDY_DEFAULTS, run_study

    study = configlib.resolve(None, ['study.name="sg"', 'study.protocol=["new-cores-labels"]',
                                     'study.methods=["pls", "nmf_svr"]', "study.test_labels=[2]", "study.seeds=[0]",
                                     'study.suggest=["random", "diverse"]', f'study.suggest_from="{pretrained}"'],
                              default_file=STUDY_DEFAULTS)["study"]
    summary = run_study(data_root, study, log=lambda *a: None)
    assert set(summary["selection"]) == {"random", "diverse"}
    chosen = pd.read_csv(data_root / "experiments" / "sg-labels-suggest" / "results" / "selection-diverse.csv")
    read = {}
    for r in summary[summary["method"] != "floor"]["experiment"].unique():
        exp = Experiment.open(data_root, r)
        read[r] = (exp.config()["data"]["test_label_rows"], exp.provenance()["test_cores_read"]["labels"])
    diverse = {tuple(v) for f, v in read.values() if f}
    assert diverse == {tuple(sorted(chosen["source_file"]))}  # both methods, exactly the chosen rows
    random = {tuple(v) for f, v in read.values() if not f}
    assert len(random) == 1 and random != diverse
    test = load_split(data_root, "synthetic", "test")
    assert (chosen.groupby("core").size() <= 2).all() and test.set_index("source_file").loc[
        chosen["source_file"], ["CaCO3", "TOC"]].notna().any(axis=1).all()  # only depths with a lab sample
    md = (data_root / "experiments" / "sg" / "results" / "label-budget.md").read_text()
    assert "| chosen by |" in md and "| diverse |" in md


# -- the dense lab table ------------------------------------------------------------------------------------------
def test_dense_lab_table_leaves_the_default_archive_as_it_is(tmp_path):
    from coremax.data.simulate import simulate_archive

    simulate_archive(tmp_path / "plain", seed=2, cores=2, spacing_mm=40.0, workers=1)
    simulate_archive(tmp_path / "dense", seed=2, cores=2, spacing_mm=40.0, workers=1, dense_lab=True)

    def digest(root):
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in root.rglob("*") if p.is_file()}
    plain, dense = digest(tmp_path / "plain"), digest(tmp_path / "dense")
    assert set(dense) - set(plain) == {"bulk-dense.csv", "bulk-newcores-dense.csv"}
    assert all(dense[f] == h for f, h in plain.items())  # every file of the default archive, byte for byte
    lab = pd.read_csv(tmp_path / "dense" / "bulk-dense.csv")
    truth = pd.read_csv(tmp_path / "dense" / "truth.csv")
    assert len(lab) == len(truth) and (abs(lab["depth_mm"].to_numpy() - truth["depth_mm"].to_numpy()) < 15).all()
    assert lab["CaCO3"].notna().all() and lab["TOC"].notna().mean() > 0.7
    # the sampling study's table: the archive's samples of the training cores, every depth of the test cores
    test = set(read_toml(tmp_path / "dense" / "manifest.toml")["test_cores"])
    bulk = pd.read_csv(tmp_path / "dense" / "bulk.csv")
    study = pd.read_csv(tmp_path / "dense" / "bulk-newcores-dense.csv")
    assert test and set(study["core"]) == set(bulk["core"])
    pd.testing.assert_frame_equal(study[~study["core"].isin(test)].reset_index(drop=True),
                                  bulk[~bulk["core"].isin(test)].reset_index(drop=True))
    pd.testing.assert_frame_equal(study[study["core"].isin(test)].reset_index(drop=True),
                                  lab[lab["core"].isin(test)].reset_index(drop=True))
    shutil.rmtree(tmp_path / "plain")
