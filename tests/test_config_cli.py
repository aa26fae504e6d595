"""params.yaml validation, the CLI's commands and errors, and the provenance of result files."""

import json
import subprocess
import time
from dataclasses import asdict

import pytest
import yaml

from conftest import run_cli
from uniinstruct import cli, divergences, provenance
from uniinstruct.config import ConfigError, from_dict, load_section
from uniinstruct.theory.report import TheoryConfig


def theory(**overrides):
    data = asdict(TheoryConfig())
    for key, value in overrides.items():
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return data


def test_default_theory_config_is_valid_and_round_trips():
    cfg = from_dict(TheoryConfig, asdict(TheoryConfig()), "theory")
    assert cfg == TheoryConfig()


def test_shipped_params_yaml_is_valid():
    cfg = load_section(TheoryConfig, "theory", "params.yaml")
    assert len(cfg.pairs) >= 3 and set(divergences.names()) <= set(cfg.divergences)


def test_the_released_distill_block_is_complete_and_each_tier_writes_only_what_it_changes():
    """The top-level distill is a complete DistillConfig (the released settings); toy, digits and paper merge it
    (YAML merge keys, resolved by the loader, so each block arrives complete) and write only keys whose values differ."""
    from uniinstruct.training.distill import DistillConfig

    params = yaml.safe_load(open("params.yaml"))
    released = load_section(DistillConfig, "distill", "params.yaml")
    assert asdict(released) == params["distill"] and released.divergence == "jkl" and released.lsg == 100.0
    text = open("params.yaml").read()
    for path, block in (("toy.distill", params["toy"]["distill"]), ("digits.distill", params["digits"]["distill"]),
                        ("paper.distill", params["paper"]["distill"])):
        assert set(block) == set(params["distill"]), path
        written = yaml.compose(text).value                      # the keys each block writes itself (not merged)
        node = dict((k.value, v) for k, v in written)[path.split(".")[0]]
        node = dict((k.value, v) for k, v in node.value)["distill"]
        own = {k.value for k, _ in node.value if k.value != "<<"}
        assert own and all(block[k] != params["distill"][k] for k in own), path
        assert {k for k in block if block[k] != params["distill"][k]} == own, path


@pytest.mark.parametrize("overrides, message", [
    ({"expansion.sigma_min": -1.0}, r"theory\.expansion\.sigma_min: must satisfy 0 ≤ sigma_min < sigma_max"),
    ({"expansion.n_nodes": 2}, r"theory\.expansion\.n_nodes: must be ≥ 4"),
    ({"expansion.tolerance": "small"}, r"theory\.expansion\.tolerance: expected a finite number"),
    ({"gradient.sigmas": [0.1, -2.0]}, r"theory\.gradient\.sigmas\[1\]: must be > 0"),
    ({"divergences": ["fkl", "kl"]}, r"theory\.divergences\[1\]: unknown divergence 'kl'; valid names: rkl, fkl"),
    ({"pairs": ["moons"]}, r"theory\.pairs\[0\]: unknown toy pair 'moons'; valid names: three_modes"),
    ({"discriminator.steps": 1.5}, r"theory\.discriminator\.steps: expected an integer"),
    ({"discriminator.sigma_max": 0.01}, r"theory\.discriminator\.sigma_max: must be > sigma_min"),
])
def test_bad_values_name_their_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(TheoryConfig, theory(**overrides), "theory")


def test_unknown_and_missing_keys():
    data = theory()
    data["expansion"]["sigma_mn"] = 0.1
    with pytest.raises(ConfigError, match=r"theory\.expansion\.sigma_mn: unknown key; valid keys: sigma_min"):
        from_dict(TheoryConfig, data, "theory")
    with pytest.raises(ConfigError, match=r"theory: expected a mapping"):
        from_dict(TheoryConfig, [1, 2], "theory")


def test_config_errors_carry_their_key_path_and_move_to_where_an_inherited_key_is_written():
    with pytest.raises(ConfigError) as caught:
        from_dict(TheoryConfig, theory(**{"gradient.sigmas": [0.1, -2.0]}), "p.yaml: theory")
    err = caught.value
    assert (err.path, str(err)) == ("p.yaml: theory.gradient.sigmas[1]", f"{err.path}: {err.problem}")
    written = {"p.yaml: theory.gradient.sigmas": "p.yaml: shared.sigmas", "p.yaml: theory.grad": "p.yaml: other"}
    moved = err.moved(written)
    assert str(moved) == f"p.yaml: shared.sigmas[1]: {err.problem} (inherited by theory.gradient)"
    assert err.moved({"p.yaml: theory.gradient.sigma": "elsewhere"}) is err        # a prefix of a key, not its path


def test_missing_section(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("toy: {}\n")
    with pytest.raises(ConfigError, match="missing section 'theory'; sections present: toy"):
        load_section(TheoryConfig, "theory", path)


def test_help_lists_commands():
    out = run_cli("--help")
    assert out.returncode == 0
    for command in ("info", "divergences", "notebook"):
        assert command in out.stdout


def test_stage_flags_are_scoped(capsys):
    """Every tier stage is its own sub-command: a flag it does not read is an error, not silently ignored; the
    top-level help names each command once."""
    from uniinstruct import cli

    parser = cli.build_parser()
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["toy", "teacher", "--divergence", "fkl"])
    assert exit_.value.code == 2 and "unrecognized arguments: --divergence fkl" in capsys.readouterr().err
    args = parser.parse_args(["toy", "distill", "--divergence", "fkl", "--seed", "3"])
    assert (args.func, args.divergence, args.seed, args.runs_dir) == (cli.cmd_toy_distill, "fkl", 3, "runs/toy")
    assert parser.parse_args(["digits", "evaluate"]).func is cli.cmd_digits_evaluate
    with pytest.raises(SystemExit):
        parser.parse_args(["digits", "teacher", "--runs-dir", "x"])
    with pytest.raises(SystemExit):
        parser.parse_args(["paper", "distill"])         # --profile is required
    top = parser.format_help()
    for command in ("info", "divergences", "notebook", "readme", "toy", "digits", "paper", "teacher"):
        assert top.count(f"\n    {command} ") + top.count(f"\n    {command}\n") == 1, command


def test_divergences_command_lists_registry():
    out = run_cli("divergences")
    assert out.returncode == 0
    for name in divergences.names():
        assert name in out.stdout


def test_notebook_command_rejects_bad_params_before_running(tmp_path, monkeypatch):
    params = yaml.safe_load(open("params.yaml"))
    params["theory"]["expansion"]["sigma_max"] = "eighty"
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(params))
    out = run_cli("notebook", "theory/theorem_checks", "--params", str(bad), "--out-dir", str(tmp_path / "res"),
                  "--executed-dir", str(tmp_path / "nb"))
    assert out.returncode == 2
    assert "theory.expansion.sigma_max: expected a finite number, got 'eighty'" in out.stderr
    assert not (tmp_path / "res").exists() and not (tmp_path / "nb").exists()


def test_notebook_command_rejects_unknown_notebook(capsys):
    assert cli.main(["notebook", "theory/nope"]) == 2
    assert "valid: " + ", ".join(cli.NOTEBOOKS) in capsys.readouterr().err


@pytest.mark.parametrize("param", [[], ["--param", "table=cifar100"], ["--param", "table=status"]])
def test_table_notebook_needs_one_of_its_tables_before_running(param, tmp_path, capsys):
    """tables/paper_table runs once per paper table: a missing or unknown ``table`` fails, listing the valid ones."""
    code = cli.main(["notebook", "tables/paper_table", *param, "--out-dir", str(tmp_path / "res"),
                     "--executed-dir", str(tmp_path / "nb")])
    assert code == 2
    assert "needs --param table=NAME, NAME one of: cifar10_uncond, cifar10_cond, imagenet64" in capsys.readouterr().err
    assert not (tmp_path / "res").exists() and not (tmp_path / "nb").exists()


def test_table_notebooks_variants_are_the_reports_registries_and_the_dvc_matrices():
    from uniinstruct import reports

    assert cli.NOTEBOOKS["tables/paper_table"].variant_names() == list(reports.PAPER_TABLES)
    assert cli.NOTEBOOKS["tables/tier_table"].variant_names() == list(reports.TIER_TABLES)
    stages = yaml.safe_load(open("dvc.yaml"))["stages"]
    for stage, notebook in (("paper_tables", "tables/paper_table"), ("tables", "tables/tier_table")):
        assert stages[stage]["matrix"]["table"] == cli.NOTEBOOKS[notebook].variant_names(), stage
        assert stages[stage]["cmd"] == f"uniinstruct notebook {notebook} --param table=${{item.table}}"
        assert stages[stage]["outs"][0] == "results/notebooks/tables/${item.table}.ipynb"    # one per table


def test_write_json_is_atomic_and_records_provenance(tmp_path):
    started = time.perf_counter()
    target = tmp_path / "sub" / "result.json"
    provenance.write_json(target, {"value": 1.5, "provenance": provenance.record({"seed": 3}, started)})
    data = provenance.read_json(target)
    assert data["value"] == 1.5
    prov = data["provenance"]
    assert prov["params"] == {"seed": 3}
    assert prov["libraries"]["torch"].startswith("2.13.0")
    assert set(prov["hardware"]) >= {"platform", "cpu_count", "torch_threads"}
    assert prov["wall_time_s"] >= 0 and "commit" in prov["code_version"]
    # no temporary left behind; the volatile fields in their sidecar, the rest in the result
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.json", "result.volatile.json"]
    assert [provenance.is_volatile(p) for p in sorted(target.parent.iterdir())] == [False, True]
    stable = json.loads(target.read_text())["provenance"]
    assert set(stable) == {"params", "libraries"} and set(provenance.VOLATILE) <= set(prov)


def test_a_result_written_twice_is_byte_identical(tmp_path):
    """Two writes of one result at different times differ only in the sidecar (what other stages must not hash)."""
    target = tmp_path / "result.json"
    provenance.write_json(target, {"value": 1, "provenance": provenance.record({"seed": 3}, time.perf_counter() - 5)})
    first, first_side = target.read_bytes(), provenance.volatile_path(target).read_bytes()
    provenance.write_json(target, {"value": 1, "provenance": provenance.record({"seed": 3}, time.perf_counter())})
    assert target.read_bytes() == first and provenance.volatile_path(target).read_bytes() != first_side
    provenance.volatile_path(target).unlink()                 # e.g. restored from the DVC cache without it
    assert provenance.read_json(target)["provenance"] == json.loads(first)["provenance"]


def test_a_provenance_block_of_only_volatile_fields_leaves_the_result(tmp_path):
    """A notebook summary that records only its wall time: the result keeps its keys in order, the time its sidecar."""
    target = tmp_path / "summary.json"
    provenance.write_json(target, {"a": 1, "provenance": {"wall_time_s": 2.5}, "b": 2})
    assert target.read_text() == '{\n  "a": 1,\n  "b": 2\n}\n'
    assert provenance.read_json(target) == {"a": 1, "b": 2, "provenance": {"wall_time_s": 2.5}}


def test_write_json_failure_keeps_old_file(tmp_path):
    target = tmp_path / "result.json"
    provenance.write_json(target, {"ok": True})
    with pytest.raises(TypeError):
        provenance.write_json(target, {"bad": object()})
    assert json.loads(target.read_text()) == {"ok": True}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_code_version_is_dirty_for_code_changes_not_for_pipeline_outputs(tmp_path):
    """A pipeline run rewrites results/ and dvc.lock; only other tracked files make the code differ from its commit."""
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)
    git("init", "-q")
    for name in ("src.py", "dvc.lock", "results/metrics.json"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("0\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    assert provenance.code_version(tmp_path)["dirty"] is False
    (tmp_path / "dvc.lock").write_text("1\n")
    (tmp_path / "results" / "metrics.json").write_text("1\n")
    (tmp_path / "untracked.py").write_text("1\n")
    assert provenance.code_version(tmp_path)["dirty"] is False
    (tmp_path / "src.py").write_text("1\n")
    version = provenance.code_version(tmp_path)
    assert version["dirty"] is True and len(version["commit"]) == 40
