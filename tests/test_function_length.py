"""No function over MAX_LINES lines outside tests/ and bench/ (issue 26), unless its docstring gives the
reason on a line starting with EXEMPTION.

Length is ``end_lineno - lineno + 1`` from Python's ast (decorators excluded, the signature and docstring
included); methods and nested functions count on their own.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 60
EXEMPTION = "Over 60 lines:"
SKIPPED_DIRS = {"tests", "bench", "__pycache__"}  # hidden folders (.venv, .git, ...) are skipped too


def long_functions(source: str, name: str) -> list[str]:
    """'name:line function (n lines)' for each function of ``source`` over MAX_LINES without an exemption line."""
    out = []
    for node in ast.walk(ast.parse(source, filename=name)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        n = node.end_lineno - node.lineno + 1
        doc = ast.get_docstring(node) or ""
        if n > MAX_LINES and not any(line.strip().startswith(EXEMPTION) for line in doc.splitlines()):
            out.append(f"{name}:{node.lineno} {node.name} ({n} lines)")
    return out


def project_files(root: Path) -> list[Path]:
    """The project's .py files: none under tests/, bench/, a hidden folder or a nested worktree or repository
    (a folder holding its own .git)."""
    files = []
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (here == root and d in SKIPPED_DIRS)
                         and d != "__pycache__" and not (here / d / ".git").exists())
        files += [here / n for n in sorted(names) if n.endswith(".py")]
    return files


def test_no_function_over_60_lines_without_a_reason():
    files = project_files(ROOT)
    assert any(f.relative_to(ROOT).as_posix() == "training/trainer.py" for f in files)  # the walk found the code
    found = [hit for f in files for hit in long_functions(f.read_text(encoding="utf-8"), str(f.relative_to(ROOT)))]
    assert not found, (f"functions over {MAX_LINES} lines: split them, or give the reason on a docstring line "
                       f"starting with '{EXEMPTION}':\n" + "\n".join(found))


def _function(n_lines: int, doc: str) -> str:
    """Source of one function exactly ``n_lines`` long with docstring ``doc`` (one line)."""
    body = [f'    """{doc}"""'] + ["    x = 1"] * (n_lines - 3) + ["    return x"]
    return "\n".join(["def f():", *body]) + "\n"


def test_the_check_counts_lines_as_the_issue_does():
    assert long_functions(_function(60, "Short enough."), "m.py") == []
    assert long_functions(_function(61, "Too long."), "m.py") == ["m.py:1 f (61 lines)"]
    assert long_functions(_function(61, "Over 60 lines: one flat table."), "m.py") == []
    method = "class C:\n" + "".join("    " + line + "\n" for line in _function(61, "x").splitlines())
    assert long_functions(method, "m.py") == ["m.py:2 f (61 lines)"]


def test_the_walk_skips_tests_bench_hidden_and_nested_repositories(tmp_path):
    for rel in ("pkg/a.py", "tests/t.py", "bench/b.py", ".venv/v.py", "wt-x/w.py", "pkg/tests/kept.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    (tmp_path / "wt-x" / ".git").write_text("gitdir: elsewhere\n")  # a git worktree's .git is a file
    found = sorted(p.relative_to(tmp_path).as_posix() for p in project_files(tmp_path))
    assert found == ["pkg/a.py", "pkg/tests/kept.py"]
