"""Static checks over the product code (no plain pickle, torch.load only with weights_only=True,
yaml.safe_load only, no shell=True, no eval/exec), and run names that cannot leave the log dir."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from data.schema import ConfigError
from tests.reliability.procs import ROOT, in_process_args, train_in_process
from train import experiment_dir

SOURCE_DIRS = ("data", "models", "training", "evaluation", "bench")
ALLOWED_UNPICKLER = Path("data/legacy.py")  # the allow-listed unpickler of the earlier system's files


def product_files() -> list[Path]:
    files = [ROOT / "train.py", ROOT / "run.py"]
    for d in SOURCE_DIRS:
        files.extend(sorted((ROOT / d).rglob("*.py")))
    return [f for f in files if f.is_file()]


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return "?"


def keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def violations(path: Path) -> list[str]:
    rel = path.relative_to(ROOT)
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(rel))):
        where = f"{rel}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Call):
            fn = dotted(node.func)
            if fn == "torch.load" and not is_true(keyword(node, "weights_only")):
                out.append(f"{where}: torch.load without weights_only=True")
            if fn in ("pickle.load", "pickle.loads", "pickle.Unpickler", "joblib.load", "dill.load",
                      "cloudpickle.load", "pd.read_pickle", "pandas.read_pickle") and rel != ALLOWED_UNPICKLER:
                out.append(f"{where}: {fn} (use the allow-listed unpickler in {ALLOWED_UNPICKLER})")
            if fn in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "yaml.unsafe_load_all"):
                out.append(f"{where}: {fn} (use yaml.safe_load)")
            if is_true(keyword(node, "shell")):
                out.append(f"{where}: shell=True")
            if fn in ("os.system", "os.popen", "eval", "exec"):
                out.append(f"{where}: {fn}")
            if fn in ("np.load", "numpy.load") and is_true(keyword(node, "allow_pickle")):
                out.append(f"{where}: np.load(allow_pickle=True)")
        if isinstance(node, ast.Attribute) and dotted(node) in ("yaml.Loader", "yaml.UnsafeLoader", "yaml.FullLoader"):
            out.append(f"{where}: {dotted(node)}")
    return out


def test_no_unsafe_loading_or_shell_in_the_product_code():
    files = product_files()
    assert len(files) > 30 and ROOT / ALLOWED_UNPICKLER in files  # the scan sees the code it should
    found = [v for f in files for v in violations(f)]
    assert found == [], "\n".join(found)


def test_the_scan_catches_what_it_looks_for(tmp_path, monkeypatch):
    bad = ROOT / "bench" / "_scan_probe.py"  # not written: parsed from a string under a product path
    code = ("import torch, pickle, yaml, subprocess\n"
            "torch.load('x')\ntorch.load('x', weights_only=False)\npickle.loads(b'')\nyaml.load('a')\n"
            "subprocess.run('ls', shell=True)\nyaml.load('a', Loader=yaml.Loader)\n")
    monkeypatch.setattr(Path, "read_text", lambda self, encoding=None: code)
    assert len(violations(bad)) == 7


@pytest.mark.parametrize("name", ["../x", "../../etc", "/tmp/x", "a/../../x", "a/../b", ".", " "])
def test_experiment_names_cannot_leave_the_log_dir(tmp_path, capsys, name):
    log_dir = tmp_path / "logs"
    assert train_in_process(in_process_args(log_dir, name)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --experiment: expected a name inside logging.log_dir ('{log_dir}'), found {name!r}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing created, inside or outside


def test_plain_and_nested_experiment_names_are_fine(tmp_path):
    assert experiment_dir(tmp_path, "run1") == tmp_path / "run1"
    assert experiment_dir(tmp_path, "sweeps/dwa") == tmp_path / "sweeps" / "dwa"
    with pytest.raises(ConfigError, match="expected a name inside logging.log_dir"):
        experiment_dir(tmp_path, str(tmp_path / ".." / "x"))
