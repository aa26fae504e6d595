"""The DVC graph reruns exactly the stages whose code changed.

Each stage's code deps under ``src/`` must equal the import closure of what its command runs: the CLI's module-level
imports, the imports of the ``cmd_*`` function the command dispatches to (and the CLI helpers it calls), for
``uniinstruct notebook NAME`` the notebook's own imports and its config class, and, from there, every import of every
reached module (function bodies included: a module is one unit). A module missing from the deps lets a stage keep
stale results; a module listed but not imported reruns a stage for nothing. Both fail here with the exact list.
"""

from __future__ import annotations

import ast
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT, run_dvc, volatile_keys
from uniinstruct.training import checkpoint

SRC = ROOT / "src"
PACKAGE = "uniinstruct"


def module_file(name: str) -> Path | None:
    """The source file of a package module (``pkg/__init__.py`` for a package), or None outside the package."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    base = SRC.joinpath(*name.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return base.with_suffix(".py") if base.with_suffix(".py").is_file() else None


def imported_modules(nodes) -> set[str]:
    """Package modules named by the import statements among ``nodes`` (``from a import b`` is ``a.b`` when b is a
    module); their parent packages too, since importing a module runs every ``__init__`` above it."""
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1)
                         if module_file(".".join(parts[:i])) is not None)
    return found


def closure(modules: set[str]) -> set[Path]:
    """Files of ``modules`` and of everything they import, transitively; a package's data files go with it."""
    seen, todo = set(), list(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        tree = ast.parse(module_file(name).read_text(encoding="utf-8"))
        todo.extend(imported_modules(ast.walk(tree)) - seen)
        todo.extend(name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1))     # every __init__ above it
    files = set()
    for name in seen:
        path = module_file(name)
        files.add(path)
        if path.name == "__init__.py":      # package data (e.g. paper_data/*.csv) read through importlib.resources
            files.update(p for p in path.parent.iterdir() if p.is_file() and p.suffix not in (".py", ".pyc"))
    return files


def cli_entry(command: str) -> set[str]:
    """Modules that ``uniinstruct COMMAND`` imports: the CLI's module-level imports plus those of the function
    ``cmd_COMMAND`` and of the CLI functions it calls (the CLI is not walked as one unit: each command imports lazily).
    ``COMMAND`` is e.g. ``toy_runs`` for ``uniinstruct toy runs``."""
    tree = ast.parse((SRC / PACKAGE / "cli.py").read_text(encoding="utf-8"))
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    modules = imported_modules(n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)))
    assert f"cmd_{command}" in functions, f"the CLI has no function cmd_{command}"
    seen, todo = set(), [f"cmd_{command}"]
    while todo:
        name = todo.pop()
        if name in seen or name not in functions:
            continue
        seen.add(name)
        body = list(ast.walk(functions[name]))
        modules |= imported_modules(body)
        todo.extend(n.id for n in body if isinstance(n, ast.Name) and n.id in functions)
    return modules


def notebook_entry(name: str) -> set[str]:
    """Modules that ``uniinstruct notebook NAME`` imports: its config class's module (and its variants' registry's,
    if it has one) and the notebook's imports."""
    from uniinstruct.cli import NOTEBOOKS

    spec = NOTEBOOKS[name]
    modules = {target.partition(":")[0] for target in (spec.config, spec.variants) if target}
    cells = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text(encoding="utf-8"))["cells"]
    for cell in cells:
        if cell["cell_type"] == "code":
            source = "".join(cell["source"])
            source = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
            modules |= imported_modules(ast.walk(ast.parse(source)))
    return modules


def stage_code(cmd: str) -> set[Path]:
    """The source files that a stage's command runs."""
    argv = shlex.split(cmd)
    assert argv[0] == "uniinstruct", f"stage command {cmd!r} does not call the uniinstruct CLI"
    stage = f"{argv[1]}_{argv[2]}" if argv[1] in ("toy", "digits", "paper") else argv[1]
    modules = cli_entry(stage)
    if argv[1] == "notebook":
        modules |= notebook_entry(argv[2])
    return closure(modules) | {SRC / PACKAGE / "cli.py"}


def resolved_stages() -> dict[str, dict]:
    """Every stage of dvc.yaml with its matrix expanded: name -> {"cmd", "deps"} (as DVC resolves them)."""
    out = subprocess.run([sys.executable, "-c", (
        "import json; from dvc.repo import Repo\n"
        "repo = Repo('.')\n"
        "print(json.dumps({s.addressing: {'cmd': s.cmd, 'deps': [d.def_path for d in s.deps]}"
        " for s in repo.index.stages}))")], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def declared_code(deps: list[str]) -> set[Path]:
    """Source files covered by a stage's deps (a folder dep covers every file below it)."""
    files = set()
    for dep in deps:
        path = ROOT / dep
        if not path.is_relative_to(SRC):
            continue
        files |= ({p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts} if path.is_dir()
                  else {path})
    return files


def minimal_deps(files: set[Path]) -> list[str]:
    """The shortest dep list that covers exactly ``files``: a folder where every file below it is needed."""
    def below(folder: Path) -> set[Path]:
        return {p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts}

    deps, done = [], set()
    for path in sorted(files):
        if path in done:
            continue
        top = path
        while top.parent != SRC / PACKAGE and below(top.parent) <= files:
            top = top.parent
        if top != path and below(top) <= files:
            deps.append(top)
            done |= below(top)
        else:
            deps.append(path)
            done.add(path)
    return sorted(str(p.relative_to(ROOT)) for p in deps)


STAGES = resolved_stages()


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_code_deps_are_its_import_closure(stage):
    spec = STAGES[stage]
    needed, declared = stage_code(spec["cmd"]), declared_code(spec["deps"])
    rel = lambda files: sorted(str(p.relative_to(ROOT)) for p in files)     # noqa: E731
    fix = f"; its code deps should be {minimal_deps(needed)}"
    assert not needed - declared, f"{stage}: dvc.yaml misses code it runs: {rel(needed - declared)}{fix}"
    assert not declared - needed, f"{stage}: dvc.yaml lists code it never imports: {rel(declared - needed)}{fix}"


def test_the_lock_records_only_stages_that_dvc_yaml_defines():
    """DVC rewrites a stage's lock entry when it runs the stage and never drops the entry of a stage that dvc.yaml
    no longer has: such entries (46 of 63 once, 5,000 lines) describe results nothing regenerates."""
    locked = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]
    assert sorted(set(locked) - set(STAGES)) == []
    assert set(locked) == set(STAGES), f"stages never run: {sorted(set(STAGES) - set(locked))}"


def test_closure_follows_imports_inside_functions_and_package_data():
    """Independent check of the walker on modules whose imports are known by reading them."""
    files = closure({"uniinstruct.paper_data"})
    assert files == {SRC / PACKAGE / "__init__.py", *(SRC / PACKAGE / "paper_data").iterdir()} - {
        p for p in (SRC / PACKAGE / "paper_data").iterdir() if p.name == "__pycache__"}
    # cmd_readme imports reports inside its body; the package imports its modules, which import paper_data and
    # tables at module level
    readme = stage_code("uniinstruct readme")
    assert {SRC / PACKAGE / "reports" / "readme.py", SRC / PACKAGE / "tables.py", SRC / PACKAGE / "cli.py",
            SRC / PACKAGE / "paper_data" / "imagenet64.csv", SRC / PACKAGE / "config.py"} <= readme
    assert SRC / PACKAGE / "training" / "distill.py" not in stage_code("uniinstruct info")


def _dvc(cwd: Path, *args: str) -> str:
    run = run_dvc(*args, cwd=cwd)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


@pytest.mark.slow
@pytest.mark.parametrize("ignore", [True, False])
def test_bytecode_cache_leaves_stages_up_to_date(tmp_path, ignore):
    """Importing a dep package on a machine that writes ``__pycache__`` must not make its stage stale; the control
    without the project's .dvcignore shows that it would."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("VALUE = 1\n")
    (tmp_path / "dvc.yaml").write_text("stages:\n  s:\n    cmd: python -c \"open('out.txt', 'w').write('ok')\"\n"
                                       "    deps: [pkg]\n    outs: [out.txt]\n")
    _dvc(tmp_path, "init", "--no-scm", "-q")
    if ignore:
        (tmp_path / ".dvcignore").write_text((ROOT / ".dvcignore").read_text())
    _dvc(tmp_path, "repro", "-q")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-c", "import pkg"], cwd=tmp_path, env=env, check=True)
    assert list((tmp_path / "pkg" / "__pycache__").glob("*.pyc")), "python wrote no bytecode: the test proves nothing"
    status = json.loads(_dvc(tmp_path, "status", "--json"))
    assert (status == {}) == ignore, status


def test_no_committed_result_holds_volatile_provenance():
    """Every JSON result of the pipeline (not a sidecar) is free of wall times, timestamps, commits and hardware: a
    rerun that reproduces it leaves it byte for byte, and the lock's hashes with it."""
    from uniinstruct.provenance import is_volatile

    results = [p for p in sorted((ROOT / "results").rglob("*.json")) if not is_volatile(p)]
    assert {"theory", "toy", "unification", "digits"} <= {p.stem for p in results if p.parent.name == "metrics"}
    found = {str(p.relative_to(ROOT)): keys for p in results if (keys := volatile_keys(json.loads(p.read_text())))}
    assert found == {}


@pytest.mark.parametrize("ignore", [True, False])
def test_a_rerun_with_the_same_result_leaves_its_readers_up_to_date(tmp_path, ignore):
    """A stage rerun that reproduces its result (new wall time, timestamp, commit) must not make the stages that read
    the result stale: the volatile provenance lives in a sidecar that .dvcignore hides; the control without the
    project's .dvcignore shows that it would."""
    (tmp_path / "write.py").write_text(
        f"import sys, time\nsys.path.insert(0, {str(ROOT / 'src')!r})\nfrom uniinstruct import provenance\n"
        "provenance.write_json('a/result.json',\n"
        "                      {'value': 1, 'provenance': provenance.record({}, time.perf_counter())})\n")
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  a:\n    cmd: python write.py\n    outs: [a]\n"
        "  b:\n    cmd: python -c \"import shutil; shutil.copy('a/result.json', 'b.json')\"\n"
        "    deps: [a]\n    outs: [b.json]\n")
    _dvc(tmp_path, "init", "--no-scm", "-q")
    if ignore:
        (tmp_path / ".dvcignore").write_text((ROOT / ".dvcignore").read_text())
    _dvc(tmp_path, "repro", "-q")
    before = (tmp_path / "a" / "result.volatile.json").read_text()
    time.sleep(1.1)                                   # created_utc has one-second resolution
    _dvc(tmp_path, "repro", "-q", "-f", "-s", "a")
    assert (tmp_path / "a" / "result.volatile.json").read_text() != before, "nothing volatile changed: proves nothing"
    status = json.loads(_dvc(tmp_path, "status", "--json"))
    assert (status == {}) == ignore, status


@pytest.mark.slow
def test_a_killed_dvc_repro_resumes_its_runs(tmp_path, tiny_toy_params):
    """`dvc repro` killed with SIGKILL mid-run, then rerun, resumes the run from its checkpoint (runs/toy persists)
    and ends bit for bit like an uninterrupted run."""
    params = yaml.safe_load(tiny_toy_params(iterations=1500, batch=32, checkpoint_every=50, warmup_fake_images=640,
                                            warmup_sim_images=1280).read_text())
    toy = params["toy"]
    toy["matrix"].update(divergences=["js"], seeds=[0], official_seeds=[], methods=[], released_divergences=[],
                         no_gan_divergences=[])
    toy["ceiling"]["seeds"] = []
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_text(yaml.safe_dump({"toy": toy}, allow_unicode=True))
    (repo / "dvc.yaml").write_text(
        "stages:\n"
        "  teacher:\n    cmd: uniinstruct toy teacher --quiet\n    params: [toy.teacher_train]\n"
        "    outs: [results/toy/teacher]\n"
        "  runs:\n    cmd: uniinstruct toy runs --workers 1 --quiet\n    deps: [results/toy/teacher/teacher.pt]\n"
        "    params: [toy.distill, toy.matrix]\n    outs:\n      - runs/toy:\n          persist: true\n")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    _dvc(repo, "init", "--no-scm", "-q")

    def repro():
        return subprocess.Popen([sys.executable, "-m", "dvc", "repro", "-q"], cwd=repo, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)

    victim = repro()
    ckpt = repo / "runs" / "toy" / "ui-js-exact-s0" / "checkpoint.pt"
    deadline = time.time() + 240
    while not ckpt.exists() and time.time() < deadline and victim.poll() is None:
        time.sleep(0.05)
    os.killpg(victim.pid, signal.SIGKILL)               # dvc, its shell and the training process
    victim.wait()
    interrupted_at = checkpoint.load(ckpt)["iteration"]
    assert 0 < interrupted_at < 1500 and not (ckpt.parent / "run.json").exists()
    second = repro()
    assert second.wait() == 0, second.stderr.read().decode()[-2000:]
    run = json.loads((ckpt.parent / "run.json").read_text())
    assert run["status"] == "ok" and run["resumed_from"] >= interrupted_at > 0
    alone = subprocess.run(["uniinstruct", "toy", "distill", "--divergence", "js", "--runs-dir", "alone", "--quiet"],
                           cwd=repo, env=env, capture_output=True, text=True)
    assert alone.returncode == 0, alone.stderr[-2000:]
    assert torch.equal(checkpoint.load(repo / "alone" / "ui-js-exact-s0" / "samples.pt"),
                       checkpoint.load(ckpt.parent / "samples.pt"))
    assert json.loads(_dvc(repo, "status", "--json")) == {}
