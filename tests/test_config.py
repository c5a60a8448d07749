"""Config hierarchy: precedence, strict keys and types, --print-config, documentation of every key."""

import ast
import inspect
import re
from pathlib import Path

import pytest

from coremax import config as configlib
from coremax.config import schema
from coremax.config.schema import text
from coremax.errors import UserError
from coremax.cli import train_main
from coremax.io import read_toml
from coremax.study import STUDY_DEFAULTS, protocols, study_sweep
from coremax.sweep.samplers import SAMPLERS

ROOT = Path(__file__).resolve().parents[1]


def four_levels(tmp_path, in_default=True, in_experiment=True, override=True):
    default = tmp_path / "default.toml"
    default.write_text("[optim]\n" + ("epochs = 2\n" if in_default else "") + "blr = 0.1\n")
    exp = tmp_path / "exp.toml"
    exp.write_text("[optim]\nepochs = 3\n" if in_experiment else "")
    return configlib.resolve(exp, ["optim.epochs=4"] if override else [],
                             function_defaults={"optim": {"epochs": 1}}, default_file=default)


@pytest.mark.parametrize("levels, value, source", [
    ((True, True, True), 4, "command-line"),
    ((True, True, False), 3, "experiment"),
    ((True, False, False), 2, "default-config"),
    ((False, False, False), 1, "function"),
])
def test_each_level_wins_over_the_ones_below(tmp_path, levels, value, source):
    cfg = four_levels(tmp_path, *levels)
    assert cfg["optim"]["epochs"] == value
    assert cfg.source("optim", "epochs") == source


def test_real_hierarchy_levels(tmp_path):
    fd = configlib.defaults()
    assert fd["optim"]["epochs"] >= 1 and fd["model"]["patch_size"] == 16 and fd["baseline"]["ratio"]["terms"] == 1
    exp = tmp_path / "exp.toml"
    exp.write_text("[model]\nmask_ratio = 0.5\n[optim]\nepochs = 7\n")
    cfg = configlib.resolve(exp, ["optim.epochs=9"])
    assert cfg["optim"]["epochs"] == 9 and cfg.source("optim", "epochs") == "command-line"
    assert cfg["model"]["mask_ratio"] == 0.5 and cfg.source("model", "mask_ratio") == "experiment"
    assert cfg.source("model", "size") == "default-config"


def test_unknown_key_suggests_the_closest():
    with pytest.raises(UserError, match=r"model\.mask_ration.*did you mean model\.mask_ratio\?"):
        configlib.resolve(None, ["model.mask_ration=0.5"])


def test_unknown_key_in_file_names_the_file(tmp_path):
    exp = tmp_path / "exp.toml"
    exp.write_text("[optim]\nepoch = 3\n")
    with pytest.raises(UserError, match=r"optim\.epoch in .*exp\.toml.*did you mean optim\.epochs\?"):
        configlib.resolve(exp)


def test_unknown_section():
    with pytest.raises(UserError, match=r"\[modle\].*did you mean model\?"):
        configlib.resolve(None, ["modle.size=tiny"])


@pytest.mark.parametrize("override", ['optim.epochs="ten"', "optim.epochs=5.5", "optim.epochs=true",
                                      "model.norm_pix_loss=1", "data.targets=3", "data.targets=[1, 2]"])
def test_wrong_type_is_refused_naming_the_key(override):
    key = override.split("=")[0]
    with pytest.raises(UserError, match=re.escape(key)):
        configlib.resolve(None, [override])


def test_values_convert_where_safe():
    cfg = configlib.resolve(None, ["optim.blr=1", 'data.targets=["TOC"]', "data.dataset=mycores",
                                   "finetune.from=pre-1"])
    assert cfg["optim"]["blr"] == 1.0 and isinstance(cfg["optim"]["blr"], float)
    assert cfg["data"]["targets"] == ["TOC"]
    assert cfg["data"]["dataset"] == "mycores" and cfg["finetune"]["from"] == "pre-1"


def test_choices_are_checked():
    with pytest.raises(UserError, match=r"model\.loss_on.*masked, all"):
        configlib.resolve(None, ['model.loss_on="some"'])


def test_bad_override_syntax():
    with pytest.raises(UserError, match="section.key=value"):
        configlib.resolve(None, ["epochs=3"])


def test_print_config_shows_values_and_levels(tmp_path, capsys):
    exp = tmp_path / "exp.toml"
    exp.write_text("[model]\nmask_ratio = 0.3\n")
    train_main(["--config", str(exp), "--print-config", "optim.epochs=5", 'baseline.ratio.pair="Ca/Ti"',
                "--stage", "finetune"])
    out = capsys.readouterr().out
    assert re.search(r'^\[baseline\.ratio\]\npair = "Ca/Ti"\s+# command-line$', out, re.M)
    assert re.search(r"^epochs = 5\s+# command-line$", out, re.M)
    assert re.search(r"^mask_ratio = 0\.3\s+# experiment$", out, re.M)
    assert re.search(r'^stage = "finetune"\s+# command-line$', out, re.M)
    assert re.search(r"^patch_size = 16\s+# default-config$", out, re.M)


def test_the_default_file_and_the_reference_page_are_written_from_the_schema():
    """One statement of each key: default-config.toml and docs/reference/config.md are the schema's text (a key,
    default or meaning edited in either file, not in the schema, fails here), and every key is in both."""
    fix = "; run python -m coremax.config.schema --write after editing src/coremax/config/schema/sections.py"
    assert configlib.DEFAULT_PATH.read_text() == text.default_text(), "default-config.toml differs" + fix
    page = (ROOT / "docs" / "reference" / "config.md").read_text()
    assert page == text.reference_page(), "docs/reference/config.md differs" + fix
    cfg = configlib.resolve(None)
    for section in cfg.sections:
        body = configlib.DEFAULT_PATH.read_text().split(f"[{section}]\n")[1].split("\n[")[0]
        for key in cfg.leaves(section):
            assert re.search(rf"^{key} = .* # \S", body, re.M), f"{section}.{key} has no comment"
            assert f"| `{section}.{key}` |" in page and cfg.source(section, key) == "default-config"


def test_print_config_output_is_valid_toml(capsys):
    import tomllib

    train_main(["--print-config"])
    assert tomllib.loads(capsys.readouterr().out)["model"]["size"]


@pytest.mark.parametrize("override", ["model.mask_ratio=1.0", "model.mask_ratio=-0.1", "optim.batch_size=0",
                                      "optim.epochs=-1", "optim.accum_iter=0", "optim.blr=-1e-3",
                                      "data.max_labels=-5", "eval.interval=1.5", "data.jitter_gain=-0.1",
                                      "optim.layer_decay=0.0", "optim.blr=nan"])
def test_out_of_range_values_are_refused_before_anything_runs(override):
    with pytest.raises(UserError, match=rf"{override.split('=')[0]} .*out of range"):
        configlib.resolve(None, [override])


def test_a_folder_as_config_and_an_overlong_name_are_one_sentence(tmp_path):
    with pytest.raises(UserError, match="is a folder"):
        configlib.resolve(tmp_path)
    from coremax.paths import check_name

    with pytest.raises(UserError, match="characters long"):
        check_name("x" * 300)


def test_the_consuming_functions_state_no_default(monkeypatch):
    """[data] -> prepare_data, [model] -> build_model, [optim] -> fit, [runtime] -> setup: each names every key of
    its section and states no default; what a caller leaves out comes from the schema, and a key the section
    does not have is refused by name."""
    from coremax.engine.data import prepare_data
    from coremax.engine.runtime import setup
    from coremax.engine.trainer import fit
    from coremax.models import build_model

    for section, func in {"data": prepare_data, "model": build_model, "optim": fit, "runtime": setup}.items():
        named = {n for n, p in inspect.signature(func).parameters.items() if p.kind is p.KEYWORD_ONLY}
        assert named == set(schema.SECTIONS[section]) and configlib.signature_defaults(func) == {}, section
    assert setup(device="cpu").log_interval_s == 30.0
    monkeypatch.setitem(schema.SECTIONS["runtime"], "log_interval_s", schema.Key(7.0, "changed in the schema"))
    assert setup(device="cpu").log_interval_s == 7.0
    with pytest.raises(UserError, match=r"runtime\.thread \(given to setup\).*did you mean runtime\.threads\?"):
        setup(device="cpu", thread=1)


def test_config_imports_nothing_above_it():
    """The config package is low in the layers: registries register their words with it, never the other way."""
    allowed = ("coremax.config", "coremax.errors", "coremax.io", "coremax.paths")
    for path in (ROOT / "src" / "coremax" / "config").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            bad = [n for n in names if n.startswith("coremax") and not n.startswith(allowed)]
            assert not bad, f"{path.name} imports {bad}"


FIXTURES = ROOT / "tests" / "fixtures"


@pytest.mark.parametrize("name", ["frozen-finetune-config.toml", "frozen-baseline-config.toml"])
def test_a_frozen_config_with_flat_baseline_keys_still_resolves(name):
    """config.toml of experiments frozen before [baseline.<method>] (written by that version's resolve): read
    with each moved key under its new name and a note, refused with the new name when it is not frozen."""
    from coremax.baselines import make_baseline
    from coremax.frozen import config_change

    path, moved = FIXTURES / name, {k: v for k, v in configlib.RENAMED.items() if k.startswith("baseline.")}
    frozen = read_toml(path)
    cfg = configlib.resolve(path, frozen=True)
    for old, new in moved.items():
        assert cfg.get(new) == frozen["baseline"][old.split(".")[1]], new
    assert len([n for n in cfg.notes if "(renamed)" in n]) == len(moved)
    assert config_change(frozen, cfg.to_dict()) is None  # the same values, compared by their new names
    with pytest.raises(UserError, match=r"baseline\.n_components .*is now called baseline\.nmf_svr\.n_components"):
        configlib.resolve(path)
    if cfg["experiment"]["stage"] == "baseline":
        model = make_baseline(cfg["baseline"]["method"], cfg["baseline"])
        assert (model.pair, model.terms, model.inputs) == (("Ca", "Ti"), 2, "elements")


def test_sub_section_keys_are_three_part_names(tmp_path):
    exp = tmp_path / "exp.toml"
    exp.write_text('[baseline]\nmethod = "ratio"\n[baseline.ratio]\npair = "Ca/Ti"\n')
    cfg = configlib.resolve(exp, ["baseline.ratio.terms=2"], values={"baseline.mlc.cv_folds": 3})
    assert cfg["baseline"]["ratio"] == {"pair": "Ca/Ti", "terms": 2} and cfg["baseline"]["mlc"]["cv_folds"] == 3
    assert cfg.source("baseline.ratio", "pair") == "experiment" and cfg.source("baseline", "method") == "experiment"
    for override, message in [("baseline.ratio.terms=3", r"baseline\.ratio\.terms = 3 .*out of range.*1 or 2"),
                              ('baseline.ratio.terms="two"', r"baseline\.ratio\.terms .*must be an integer"),
                              ('baseline.ratio.pairs="Ca/Ti"', r"did you mean baseline\.ratio\.pair\?"),
                              ('baseline.ratoi.pair="Ca/Ti"', r"\[baseline\.ratoi\].*did you mean baseline\.ratio\?"),
                              ("baseline.ratio=2", r"baseline\.ratio .*is a section"),
                              ('baseline.pair="Ca/Ti"', r"now called baseline\.ratio\.pair")]:
        with pytest.raises(UserError, match=message):
            configlib.resolve(None, [override])


def test_the_keys_that_may_change_after_training_are_schema_names():
    from coremax.frozen import RESUME_MAY_CHANGE, TEST_MAY_CHANGE, config_change

    names = set(schema.SECTIONS) | {full for full, _ in schema.every_key()}
    assert set(RESUME_MAY_CHANGE) | set(TEST_MAY_CHANGE) <= names
    then, now = configlib.defaults(), configlib.defaults()
    now["baseline"]["ratio"]["pair"] = "Ca/Ti"
    assert config_change(then, now) == ("baseline.ratio.pair", "", "Ca/Ti")
    assert config_change(then, now, ("baseline.ratio",)) is None


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_config_resolves(path):
    """The recipes and studies the docs run are checked the way their commands check them: an experiment file
    against the config hierarchy, a study file against the study defaults and each of its protocols' runs."""
    if "[study]" not in path.read_text():
        assert configlib.resolve(path)["experiment"]["stage"]
        return
    study = configlib.resolve(path, default_file=STUDY_DEFAULTS)["study"]
    for protocol in protocols(study):
        sweep = study_sweep(study, protocol)
        SAMPLERS[sweep["sampler"]].check(sweep)
