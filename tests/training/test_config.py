"""The config system: schema validation, suggestions, overrides, extends, and no dead keys."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path
from typing import get_type_hints

import pytest

from data.schema import ConfigError, from_dict, to_dict
from training.config import Config, load_config

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_round_trip_through_dict():
    cfg = load_config(None)
    assert from_dict(Config, to_dict(cfg)) == cfg


def test_defaults_are_not_shared_between_configs():
    a, b = Config(), Config()
    a.logging.wandb.mode = "disabled"
    a.loss.balancer.grouping.groups["signal"].append("class")
    assert b.logging.wandb.mode == "offline" and b.loss.balancer.grouping.groups["signal"] == ["signal"]


@pytest.mark.parametrize("name", ["quickstart.yaml", "config.yaml"])
def test_shipped_configs_load(name):
    path = ROOT / "configs" / name
    if not path.exists():
        pytest.fail(f"configs/{name} is missing")
    load_config(path)


def test_every_preset_loads():
    presets = sorted((ROOT / "configs").rglob("*.yaml"))
    assert presets, "no configs shipped"
    for p in presets:
        load_config(p)


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"^config key 'training\.epochs': expected an integer, found 'abc'"):
        load_config(None, ["training.epochs=abc"])


def test_unknown_key_gets_a_suggestion():
    with pytest.raises(ConfigError, match=r"'traning': unknown key \(did you mean 'training'\?\)"):
        load_config(None, ["traning.epochs=1"])
    with pytest.raises(ConfigError, match=r"'training\.epoch': unknown key \(did you mean 'epochs'\?\)"):
        load_config(None, ["training.epoch=1"])


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("training.lr=-1", r"'training\.lr': expected a value > 0\.0, found -1\.0"),
        ("training.epochs=0", r"'training\.epochs': expected a value >= 1, found 0"),
        ("loss.balancer.strategy=foo", r"'loss\.balancer\.strategy': expected one of \[.*'fixed'"),
        ("training.lr=.nan", r"'training\.lr': expected a finite number"),
        ("logging.use_wandb=maybe", r"'logging\.use_wandb': expected true or false, found 'maybe'"),
        ("data.split=[0.5,0.5]", r"data\.split: expected three non-negative shares summing to 1"),
        ("training=3", r"'training': expected a mapping, found 3"),
    ],
)
def test_out_of_range_and_bad_values(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, [override])


def test_override_types_follow_the_schema():
    cfg = load_config(None, ["training.lr=1e-4", "training.epochs=3.0", "logging.wandb.tags=[a,b]"])
    assert cfg.training.lr == pytest.approx(1e-4) and isinstance(cfg.training.lr, float)
    assert cfg.training.epochs == 3 and isinstance(cfg.training.epochs, int)
    assert cfg.logging.wandb.tags == ["a", "b"]


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"config file '.*nope\.yaml': not found"):
        load_config(tmp_path / "nope.yaml")


def test_invalid_yaml_names_file_and_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("training:\n  epochs: [1, 2\n")
    with pytest.raises(ConfigError, match=r"config file '.*bad\.yaml'.*line"):
        load_config(p)


def test_yaml_tags_are_not_executed(tmp_path):
    p = tmp_path / "evil.yaml"
    marker = tmp_path / "pwned"
    p.write_text(f"seed: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError):
        load_config(p)
    assert not marker.exists()


def test_extends_merges_sections_and_detects_cycles(tmp_path):
    (tmp_path / "base.yaml").write_text("training:\n  epochs: 7\n  lr: 0.5\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\ntraining:\n  epochs: 2\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert (cfg.training.epochs, cfg.training.lr) == (2, 0.5)
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")


@pytest.mark.parametrize(("text", "key", "lines"), [
    ("training:\n  epochs: 3\ndata:\n  split_seed: 1\ntraining:\n  lr: 1.0e-3\n", "training", "(lines 1 and 5)"),
    ("training:\n  epochs: 3\n  lr: 0.1\n  epochs: 4\n", "training.epochs", "(lines 2 and 4)"),
    ("loss:\n  balancer:\n    weights: {signal: 1, class: 2, signal: 3}\n", "loss.balancer.weights.signal",
     "on line 3"),
])
def test_a_key_written_twice_is_an_error_naming_it_and_the_file(tmp_path, text, key, lines):
    """YAML keeps the last silently: a second `training:` block dropped the first."""
    p = tmp_path / "dup.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=rf"^config file '{re.escape(str(p))}': key '{re.escape(key)}' appears "
                                          rf"twice {re.escape(lines)}; YAML would keep the last silently: remove one$"):
        load_config(p)


def test_anchors_aliases_and_merge_keys_still_work(tmp_path):
    p = tmp_path / "merge.yaml"
    p.write_text("training:\n  <<: {epochs: 3, lr: 0.5}\n  epochs: 4\n"  # an explicit key over a merge: allowed
                 "logging:\n  wandb: {tags: &t [a, b]}\n")
    cfg = load_config(p, ["logging.wandb.group=g"])
    assert (cfg.training.epochs, cfg.training.lr, cfg.logging.wandb.tags) == (4, 0.5, ["a", "b"])


@pytest.mark.parametrize("text", ["", "\n\n", "# all commented out\n# training:\n#   epochs: 3\n", "---\n", "~\n"])
def test_an_empty_config_file_is_refused(tmp_path, text):
    """It used to train on the defaults without a word."""
    p = tmp_path / "empty.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=rf"^config file '{re.escape(str(p))}': empty; expected a mapping of sections "
                                          r"\(e\.g\. 'training: \{epochs: 3\}'\); to train on the defaults, give no "
                                          r"--config$"):
        load_config(p)


def test_a_mapping_override_merges_into_the_section(tmp_path):
    """`training={batch_size: 8}` used to replace the whole section: the file's epochs and lr were lost."""
    p = tmp_path / "c.yaml"
    p.write_text("training:\n  epochs: 7\n  lr: 0.5\n  early_stopping: {enabled: true, patience: 4}\n")
    cfg = load_config(p, ["training={batch_size: 8, early_stopping: {patience: 2}}"])
    t = cfg.training
    assert (t.epochs, t.lr, t.batch_size, t.early_stopping.enabled, t.early_stopping.patience) == (7, 0.5, 8, True, 2)
    assert load_config(p, ["training.batch_size=8"]).training == load_config(p, ["training={batch_size: 8}"]).training


@pytest.mark.parametrize("override", ["training=null", "training=~", "training.early_stopping=null"])
def test_null_over_a_section_is_refused(tmp_path, override):
    p = tmp_path / "c.yaml"
    p.write_text("training:\n  epochs: 7\n  early_stopping: {enabled: true}\n")
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"^override '{key}': key '{key}' is empty \(null\), which would reset "
                                          r"the whole section to its defaults; remove it, or set the keys you mean"):
        load_config(p, [override])


def test_an_empty_section_in_a_file_that_extends_another_is_refused(tmp_path):
    (tmp_path / "base.yaml").write_text("training:\n  epochs: 7\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\ntraining:\n")
    with pytest.raises(ConfigError, match=r"child\.yaml': key 'training' is empty \(null\), which would reset"):
        load_config(tmp_path / "child.yaml")


def _leaf_keys(cls, prefix=""):
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _leaf_keys(tp, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f.name


def _code_without_validation(path: Path) -> str:
    """A config module's code minus its ``__post_init__`` checks (validating a key is not using it)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            node.body = [n for n in node.body if not (isinstance(n, ast.FunctionDef) and n.name == "__post_init__")]
    return ast.unparse(tree)


def test_no_key_exists_that_nothing_reads():
    """Every leaf key is read somewhere as `.name` outside its declaration: in the code, or in a
    derived property of its config class (validation in ``__post_init__`` does not count)."""
    sources = [p for p in ROOT.rglob("*.py") if ".venv" not in p.parts and "tests" not in p.parts]
    text = "\n".join(
        _code_without_validation(p) if p.name == "config.py" else p.read_text(encoding="utf-8")
        for p in sources if p.name != "schema.py"
    )
    dead = [dotted for dotted, leaf in _leaf_keys(Config) if not re.search(rf"\.{leaf}\b", text)]
    assert dead == [], f"config keys that no code reads: {dead}"


def test_an_option_the_network_cannot_serve_is_refused_when_the_config_is_read():
    """loss.threshold_loss=gaussian_nll used to pass validation, create the run, and fail at step 1."""
    with pytest.raises(ConfigError, match=r"^config key 'loss\.threshold_loss': expected 'huber', found "
                                          r"'gaussian_nll', which needs a variance head "
                                          r"\(outputs\['threshold_logvar'\]\) that this network does not have yet$"):
        load_config(None, ["loss.threshold_loss=gaussian_nll"])
    assert load_config(None, ["loss.threshold_loss=huber"]).loss.threshold_loss == "huber"


@pytest.mark.parametrize(("overrides", "pattern"), [
    (["training.early_stopping.metric=val/totl"], r"expected val/total, val/weighted, val/<component> \(signal, "
                                                  r"class, .*\), their train/ forms, or val/patient/\.\.\., found "
                                                  r"'val/totl'$"),
    (["training.early_stopping.metric=val/patient/threshold/mae_db", "training.clinical_validation=false"],
     r"'val/patient/threshold/mae_db' is scored only with training\.clinical_validation=true, found false$"),
    (["training.early_stopping.metric=train/total", "training.early_stopping.enabled=true"],
     r"expected a val/ metric when early stopping is enabled \(it is checked at each validation\), found "
     r"'train/total'$"),
])
def test_an_early_stopping_metric_no_summary_holds_is_refused(overrides, pattern):
    """It used to pass, then stop the run after epoch 1 (early stopping on) or never write best.pt (off)."""
    with pytest.raises(ConfigError, match=r"^config key 'training\.early_stopping\.metric': " + pattern):
        load_config(None, overrides)
    for ok in ("val/signal", "train/total", "val/patient/threshold/within_5db"):
        assert load_config(None, [f"training.early_stopping.metric={ok}"]).training.early_stopping.metric == ok


def test_label_conditioning_is_off_by_default_and_needs_the_clean_head_pass():
    """model.label_conditioning (issue 28): off unless asked for; the heads must answer from the t = 0 pass,
    which never reads the labels, so loss.head_input noisy is refused; drop probabilities are shares."""
    cfg = load_config(None)
    assert cfg.model.label_conditioning is False
    assert (cfg.model.type_drop_prob, cfg.model.threshold_drop_prob) == (0.2, 0.2)
    assert load_config(None, ["model.label_conditioning=true"]).model.label_conditioning is True
    with pytest.raises(ConfigError, match=r"^config key 'model.label_conditioning': expected loss.head_input "
                                          r"'clean', found 'noisy'"):
        load_config(None, ["model.label_conditioning=true", "loss.head_input=noisy"])
    with pytest.raises(ConfigError, match=r"^config key 'model.type_drop_prob': expected a value <= 1.0, found 1.5"):
        load_config(None, ["model.type_drop_prob=1.5"])
    with pytest.raises(ConfigError, match=r"^config key 'model.threshold_drop_prob': expected a value >= 0.0"):
        load_config(None, ["model.threshold_drop_prob=-0.1"])
    with pytest.raises(ConfigError, match=r"^config key 'model.label_conditioning': expected true or false"):
        load_config(None, ["model.label_conditioning=maybe"])


def test_blind_static_needs_the_clean_head_pass():
    """model.blind_static blinds the heads' t = 0 pass; with loss.head_input noisy there is none."""
    assert load_config(None, ["model.blind_static=[intensity]"]).model.blind_static == ["intensity"]
    with pytest.raises(ConfigError, match=r"^config key 'model.blind_static': expected loss.head_input 'clean'"):
        load_config(None, ["model.blind_static=[intensity]", "loss.head_input=noisy"])
    with pytest.raises(ConfigError, match=r"model.blind_static: expected distinct names among age, intensity"):
        load_config(None, ["model.blind_static=[level]"])
