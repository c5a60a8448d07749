"""An experiment folder under hostile edits, faults and contradicting flags: what it was trained as is what it is."""

import errno
import json
import os
import pickle
import shutil

import pytest

from conftest import FAST, ROOT, train
from coremax.errors import UserError
from coremax.experiment import Experiment
from coremax.io import read_toml, write_toml


def _copy(data_root, tmp_path, *experiments):
    """A data root of its own: the data sets (with the synthetic archive's truth.csv) and the named experiments."""
    shutil.copytree(data_root / "datasets", tmp_path / "datasets")
    for name in experiments:
        shutil.copytree(data_root / "experiments" / name, tmp_path / "experiments" / name)
    return tmp_path


def _edit_config(exp, section, key, value):
    config = read_toml(exp.config_file)
    config[section][key] = value
    write_toml(exp.config_file, config)


def test_a_frozen_key_edited_since_training_is_refused_and_test_time_keys_are_recorded(tmp_path, data_root,
                                                                                        finetuned, capsys):
    from coremax.cli import evaluate_main
    from coremax.eval.run import evaluate_experiment

    root = _copy(data_root, tmp_path, finetuned)
    shutil.copytree(root / "datasets" / "synthetic", root / "datasets" / "other")
    exp = Experiment.open(root, finetuned)
    before = {p.name: p.read_bytes() for p in exp.results.iterdir()}
    _edit_config(exp, "data", "dataset", "other")
    with pytest.raises(SystemExit) as exit_:
        evaluate_main(["--experiment", finetuned, "--data-root", str(root)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "data.dataset = 'other'" in err and "data.dataset = 'synthetic'" in err and "train a new experiment" in err
    assert {p.name: p.read_bytes() for p in exp.results.iterdir()} == before  # nothing overwritten
    # An experiment from before provenance recorded its config: the checkpoint's config says what it was trained with.
    prov = exp.provenance()
    del prov["trained_config"]
    write_toml(exp.provenance_file, prov)
    with pytest.raises(UserError, match="data.dataset = 'other'"):
        evaluate_experiment(root, finetuned)
    _edit_config(exp, "data", "dataset", "synthetic")
    _edit_config(exp, "eval", "interval", 0.8)  # may change at test time, and is recorded with the results
    evaluate_experiment(root, finetuned)
    event = [json.loads(line) for line in exp.log_file.read_text().splitlines()][-1]
    assert event["event"] == "test" and event["eval"] == {"interval": 0.8} and event["device"] == "cpu"
    from coremax.frozen import TEST_MAY_CHANGE  # the keys that may change, written once, are the ones documented

    docs = (ROOT / "docs" / "experiment-folder.md").read_text()
    assert all((f"`{key}`" if "." in key else f"`{key}.*`") in docs for key in TEST_MAY_CHANGE)


def test_a_floor_not_computed_again_is_removed_with_the_new_results(tmp_path, data_root, finetuned, capsys):
    from coremax.cli import evaluate_main
    from coremax.eval.run import evaluate_experiment

    root = _copy(data_root, tmp_path, finetuned)
    exp = Experiment.open(root, finetuned)
    evaluate_experiment(root, finetuned)
    assert exp.has_result("test-floor")
    # The data set's rows no longer have a truth (a data set rebuilt from a table): no floor can be computed.
    (root / "datasets" / "external" / "synthetic" / "truth.csv").unlink()
    evaluate_main(["--experiment", finetuned, "--data-root", str(root)])
    assert "floor (the true composition" not in capsys.readouterr().out
    assert not exp.has_result("test-floor") and not (exp.results / "test-floor.pkl.hmac").exists()
    assert exp.has_result("test-metrics")


class _Hostile:
    """A pickle that runs a shell command when read."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_hostile_results_pickle_runs_nowhere_and_is_refused_by_name(tmp_path, data_root, pretrained, finetuned,
                                                                      monkeypatch):
    from coremax.analysis import gather_experiments
    from coremax.archive import pack, trust, unpack
    from coremax.io import UntrustedPickle, read_pickle, sign

    for path in sorted((data_root / "experiments").glob("*/results/*.pkl")):  # every result CoreMAX writes reads
        read_pickle(data_root, path)
    marker = tmp_path / "pwned"
    source = tmp_path / "elsewhere"
    shutil.copytree(data_root / "experiments" / finetuned, source / "experiments" / finetuned)
    (source / "experiments" / finetuned / "results" / "history.pkl").write_bytes(pickle.dumps(_Hostile(marker)))
    with monkeypatch.context() as m:  # packed on another machine: its manifest lists the hostile pickle's hash
        m.setenv("COREMAX_KEY_FILE", str(tmp_path / "their-key" / "results.key"))
        archive = pack(source, "experiment", finetuned, tmp_path / "ft.tar.gz")
    folder = unpack(archive, tmp_path / "root")
    exp = Experiment.open(tmp_path / "root", finetuned)
    with pytest.raises(UntrustedPickle):
        exp.read_result("history")
    with pytest.raises(UserError, match="history.pkl refers to posix.system"):
        trust(folder)
    with pytest.raises(UntrustedPickle):  # trust signed nothing
        exp.read_result("history")
    sign(exp.results / "history.pkl")  # signed or not, a pickle may call only what results are made of
    with pytest.raises(UntrustedPickle, match="history.pkl refers to posix.system"):
        exp.read_result("history")
    with pytest.warns(UserWarning, match="history.pkl refers to posix.system"):
        table = gather_experiments(tmp_path / "root")
    assert table["name"].tolist() == [finetuned]
    assert not marker.exists()  # nothing ran anywhere
    from coremax.archive import describe_unpacked  # what unpacking said: only a signed manifest says who packed it

    assert "consistent; origin not verified" in describe_unpacked(folder)
    mine = unpack(pack(data_root, "experiment", pretrained, tmp_path / "pre.tar.gz"), tmp_path / "root")
    assert "signed by this machine's key" in describe_unpacked(mine)


def test_a_pretraining_checkpoint_in_a_finetuned_experiment_is_named_as_such(tmp_path, data_root, pretrained,
                                                                             finetuned):
    from coremax.eval.predictor import load_predictor
    from coremax.eval.run import evaluate_experiment
    from coremax.io import file_sha256

    root = _copy(data_root, tmp_path, finetuned)
    exp = Experiment.open(root, finetuned)
    best = exp.checkpoints / "best-model.pth"
    shutil.copy(data_root / "experiments" / pretrained / "checkpoints" / "best-model.pth", best)
    exp.record(model_sha256={"best-model.pth": file_sha256(best)})
    for use in (lambda: evaluate_experiment(root, finetuned), lambda: load_predictor(exp)):
        with pytest.raises(UserError, match="is a pretraining checkpoint, not a fine-tuned model"):
            use()


def test_a_full_disk_while_training_is_one_sentence_and_the_run_failed(tmp_path, data_root, monkeypatch, capsys):
    from coremax import checkpoint, io, logs
    from coremax.cli import train_main

    root = _copy(data_root, tmp_path)
    full = {"now": False}

    def no_space(*args, **kwargs):  # as a full disk says it: no file name
        full["now"] = True
        raise OSError(errno.ENOSPC, "No space left on device")

    def unless_full(original):
        def write(*args, **kwargs):  # from then on no new file and no log line fit either
            if full["now"]:
                raise OSError(errno.ENOSPC, "No space left on device")
            return original(*args, **kwargs)
        return write

    monkeypatch.setattr(checkpoint.torch, "save", no_space)
    monkeypatch.setattr(io.tempfile, "mkstemp", unless_full(io.tempfile.mkstemp))
    monkeypatch.setattr(logs._JsonLines, "__call__", unless_full(logs._JsonLines.__call__))
    with pytest.raises(SystemExit) as exit_:
        train_main(["--data-root", str(root), "--stage", "finetune", "--name", "full", "optim.epochs=1",
                    "data.max_labels=16", *FAST])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert exit_.value.code == 2 and "Traceback" not in err and len(errors) == 1
    assert "checkpoints/best-model.pth cannot be written" in errors[0] and "No space left" in errors[0]
    assert Experiment.state(root, "full") == "failed"


def test_ctrl_c_while_training_says_how_to_resume_in_one_line_and_exits_130(tmp_path, data_root, monkeypatch,
                                                                            capsys):
    from coremax.cli import train_main
    from coremax.engine import tasks

    root = _copy(data_root, tmp_path)

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tasks.FinetuneTask, "validate", ctrl_c)
    with pytest.raises(SystemExit) as exit_:
        train_main(["--data-root", str(root), "--stage", "finetune", "--name", "cut", "optim.epochs=1",
                    "data.max_labels=16", *FAST])
    err = capsys.readouterr().err
    assert exit_.value.code == 130 and "Traceback" not in err and "run_interrupted" not in err
    assert err.strip().splitlines()[-1] == \
        f"interrupted; resume with: python scripts/train.py --name cut --resume --data-root {root}"
    assert Experiment.state(root, "cut") == "interrupted"


def test_resume_takes_the_frozen_config_and_never_rewrites_it(tmp_path, data_root, capsys):
    from coremax.cli import train_main

    root = _copy(data_root, tmp_path)
    exp = train(root, "done", "finetune", "optim.epochs=1", "data.max_labels=16")
    frozen = exp.config_file.read_bytes()
    with pytest.raises(SystemExit) as exit_:
        train_main(["--data-root", str(root), "--name", "done", "--resume", "optim.epochs=2"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "optim.epochs would change from 1 to 2" in err and "new experiment" in err
    assert exp.config_file.read_bytes() == frozen and len(exp.read_result("history")) == 1
    train(root, "done", "finetune", "optim.epochs=1", "data.max_labels=16", "runtime.threads=1", resume=True)
    assert exp.config_file.read_bytes() == frozen and exp.status() == "completed"  # how it ran may change
    _edit_config(exp, "data", "max_labels", 8)  # an edited frozen config is not resumed either
    with pytest.raises(UserError, match="data.max_labels = 8, but 'done' was trained with data.max_labels = 16"):
        train(root, "done", "finetune", "optim.epochs=1", "data.max_labels=8", resume=True)


@pytest.mark.parametrize("argv, message", [
    (["--stage", "finetune", 'experiment.stage="pretrain"'], "--stage finetune contradicts experiment.stage"),
    (["--name", "a", 'experiment.name="b"'], "--name a contradicts experiment.name = 'b'"),
])
def test_stage_and_name_flags_contradicting_overrides_are_refused(argv, message):
    from coremax.cli.common import experiment_parser, resolve_args

    with pytest.raises(UserError, match=message):
        resolve_args(experiment_parser("").parse_args(argv))
    same = resolve_args(experiment_parser("").parse_args(["--stage", "finetune", "--name", "a",
                                                          'experiment.stage="finetune"', 'experiment.name="a"']))
    assert same["experiment"]["stage"] == "finetune" and same["experiment"]["name"] == "a"
