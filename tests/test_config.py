"""Config hierarchy: precedence, strict keys and types, --print-config, documentation of every key."""

import re
from pathlib import Path

import pytest

from coremax import config as configlib
from coremax.errors import UserError
from coremax.cli import train_main
from coremax.stages import function_defaults
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
    fd = function_defaults()
    assert fd["optim"]["epochs"] >= 1 and fd["model"]["patch_size"] == 16
    exp = tmp_path / "exp.toml"
    exp.write_text("[model]\nmask_ratio = 0.5\n[optim]\nepochs = 7\n")
    cfg = configlib.resolve(exp, ["optim.epochs=9"], function_defaults=fd)
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
    train_main(["--config", str(exp), "--print-config", "optim.epochs=5", "--stage", "finetune"])
    out = capsys.readouterr().out
    assert re.search(r"^epochs = 5\s+# command-line$", out, re.M)
    assert re.search(r"^mask_ratio = 0\.3\s+# experiment$", out, re.M)
    assert re.search(r'^stage = "finetune"\s+# command-line$', out, re.M)
    assert re.search(r"^patch_size = 16\s+# default-config$", out, re.M)


def test_every_key_is_commented_and_documented():
    text = configlib.DEFAULT_PATH.read_text()
    readme = (ROOT / "README.md").read_text()
    cfg = configlib.resolve(None, function_defaults=function_defaults())
    for section, keys in cfg.values.items():
        for key in keys:
            line = re.search(rf"^{key} = .*$", text.split(f"[{section}]")[1].split("\n[")[0], re.M)
            assert line and "#" in line.group(0), f"{section}.{key} has no comment in default-config.toml"
    # The README's table is made from the default file: a key, default or comment that differs fails here.
    assert configlib.reference_table() in readme, "the README's config table differs from default-config.toml; " \
        "paste the output of python -c 'import coremax.config as c; print(c.reference_table())'"
    # Every function default is also in the default file (the file documents the whole schema).
    for section, keys in function_defaults().items():
        for key in keys:
            assert cfg.source(section, key) == "default-config", f"{section}.{key}"


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
        configlib.resolve(None, [override], function_defaults=function_defaults())


def test_a_folder_as_config_and_an_overlong_name_are_one_sentence(tmp_path):
    with pytest.raises(UserError, match="is a folder"):
        configlib.resolve(tmp_path, function_defaults=function_defaults())
    from coremax.paths import check_name

    with pytest.raises(UserError, match="characters long"):
        check_name("x" * 300)


def disagreements(defaults: dict, file_values: dict) -> list[str]:
    return [f"{s}.{k}: function {v!r} vs default-config {file_values.get(s, {}).get(k)!r}"
            for s, keys in defaults.items() for k, v in keys.items() if file_values.get(s, {}).get(k) != v]


def test_each_default_is_stated_once_function_defaults_equal_the_file():
    from coremax.io import read_toml

    file_values = read_toml(configlib.DEFAULT_PATH)
    assert disagreements(function_defaults(), file_values) == []
    # The check bites: a signature default that drifts from the file is reported.
    drifted = function_defaults()
    drifted["model"]["drop_path"] = 0.0
    assert disagreements(drifted, file_values) == ["model.drop_path: function 0.0 vs default-config 0.1"]


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_config_resolves(path):
    """The recipes and studies the README runs are checked the way their commands check them: an experiment file
    against the config hierarchy, a study file against the study defaults and each of its protocols' runs."""
    if "[study]" not in path.read_text():
        assert configlib.resolve(path, function_defaults=function_defaults())["experiment"]["stage"]
        return
    study = configlib.resolve(path, default_file=STUDY_DEFAULTS)["study"]
    for protocol in protocols(study):
        sweep = study_sweep(study, protocol)
        SAMPLERS[sweep["sampler"]].check(sweep)
