"""One vocabulary of metrics rows' ``kind`` for the toy and digits tiers (uniinstruct.kinds)."""

import json

import pytest

from uniinstruct.kinds import ROW_KINDS, STUDENT_KINDS, kind_label, run_kind


def test_the_vocabulary():
    assert list(ROW_KINDS) == ["data", "teacher", "ceiling", "uni-instruct", "method"]
    assert set(STUDENT_KINDS) < set(ROW_KINDS)
    assert run_kind({"method": "", "divergence": "fkl"}) == "uni-instruct"
    assert run_kind({"method": "sida", "divergence": "fkl"}) == "method"


def test_labels_read_as_the_tables_did():
    assert kind_label({"kind": "teacher", "teacher": "analytic"}) == "teacher (analytic)"
    assert kind_label({"kind": "teacher"}) == "teacher"                                 # digits: one teacher
    assert kind_label({"kind": "ceiling", "regression_steps": 3000}) == "ceiling (3000 regression steps)"
    assert kind_label({"kind": "method", "method": "sida"}) == "method"
    assert kind_label({"kind": "uni-instruct"}) == "uni-instruct"
    with pytest.raises(ValueError, match=r"unknown row kind 'teacher \(learned\)'; valid: data, teacher, ceiling"):
        kind_label({"kind": "teacher (learned)"})


def test_toy_rows_put_the_detail_in_fields_of_their_own():
    from uniinstruct.pipelines import toy

    ceiling = toy._describe_run({"kind": "ceiling", "iterations": 3000, "network": "64×3", "seed": 1, "status": "ok",
                                 "provenance": {}})
    assert ceiling["kind"] == "ceiling" and ceiling["regression_steps"] == 3000
    config = {"method": "dmd2", "divergence": "fkl", "estimator": "exact", "ratio": "logit", "seed": 0,
              "use_gan": True}
    method = toy._describe_run({"config": config, "network": "64×3", "status": "ok", "provenance": {}})
    assert method["kind"] == "method" and method["method"] == "dmd2" and method["divergence"] == ""
    student = toy._describe_run({"config": {**config, "method": ""}, "network": "64×3", "status": "ok",
                                 "provenance": {}})
    assert student["kind"] == "uni-instruct" and student["divergence"] == "fkl"


def test_digits_rows_name_a_prior_method_in_its_method_field(tmp_path):
    from uniinstruct.pipelines.digits_evaluate import sample_sets

    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "samples.json").write_text(json.dumps({"sets": [
        {"name": "teacher-heun", "nfe": 35}, {"name": "m-sida-s0", "nfe": 1}, {"name": "ui-fkl-exact-s0", "nfe": 1}]}))
    (tmp_path / "teacher").mkdir()
    (tmp_path / "teacher" / "teacher.json").write_text(json.dumps({"provenance": {}}))
    config = {"method": "sida", "divergence": "fkl", "estimator": "exact", "use_gan": True, "seed": 0}
    for name, method in (("m-sida-s0", "sida"), ("ui-fkl-exact-s0", "")):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "run.json").write_text(json.dumps(
            {"config": {**config, "method": method}, "status": "ok", "provenance": {}}))
    rows = [info for _, _, info in sample_sets(tmp_path / "samples", tmp_path / "runs")]
    assert [(r["kind"], r["method"], r["divergence"]) for r in rows] == [
        ("teacher", "", ""), ("method", "sida", ""), ("uni-instruct", "", "fkl")]


def test_both_tiers_describe_a_run_with_the_same_fields_and_a_boolean_gan(tmp_path):
    """The toy's and the digits' rows of one run agree on every field they share (one describer, kinds.describe_run);
    the GAN term is a bool in both (the tables show it as yes/no)."""
    from uniinstruct.kinds import describe_run
    from uniinstruct.pipelines import toy
    from uniinstruct.pipelines.digits_evaluate import sample_sets

    config = {"method": "", "divergence": "jkl", "estimator": "exact", "ratio": "logit", "seed": 3, "use_gan": False}
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "samples.json").write_text(json.dumps({"sets": [
        {"name": "teacher-heun", "nfe": 35}, {"name": "ui-jkl-exact-nogan-s3", "nfe": 1}]}))
    (tmp_path / "runs" / "ui-jkl-exact-nogan-s3").mkdir(parents=True)
    (tmp_path / "runs" / "ui-jkl-exact-nogan-s3" / "run.json").write_text(json.dumps(
        {"config": config, "status": "ok", "provenance": {}}))
    teacher, digits_row = [info for _, _, info in sample_sets(tmp_path / "samples", tmp_path / "runs")]
    toy_row = toy._describe_run({"config": config, "network": "64×3", "status": "ok", "provenance": {}})
    shared = describe_run(config)
    assert shared == {"kind": "uni-instruct", "method": "", "divergence": "jkl", "estimator": "exact", "gan": False,
                      "seed": 3, "nfe": 1}
    assert {k: digits_row[k] for k in shared} == {k: toy_row[k] for k in shared} == shared
    assert teacher["gan"] is False and describe_run({**config, "use_gan": True})["gan"] is True


def test_reference_rows_share_the_run_fields_with_none_set_and_the_status_reads_the_same_in_both_tiers(tmp_path):
    """The floor, the teachers and the ceiling carry the run describer's fields, empty (kinds.describe_reference);
    a student kind or an unknown kind is refused with the valid ones; a diverged run's status is worded once
    (kinds.run_status), digits adding where its samples come from."""
    from uniinstruct.kinds import describe_reference, describe_run, run_status
    from uniinstruct.pipelines import toy
    from uniinstruct.pipelines.digits_evaluate import sample_sets

    floor = describe_reference("data", nfe=0)
    assert floor == {"kind": "data", "method": "", "divergence": "", "estimator": "", "gan": False, "seed": -1,
                     "nfe": 0}
    assert set(floor) == set(describe_run({"method": "", "divergence": "fkl", "estimator": "exact",
                                           "use_gan": True, "seed": 0}))
    assert describe_reference("ceiling", nfe=1, seed=2)["seed"] == 2
    for bad in ("uni-instruct", "teacher (learned)"):
        with pytest.raises(ValueError, match=r"is not a reference kind; valid: data, teacher, ceiling$"):
            describe_reference(bad, nfe=1)

    diverged = {"status": "diverged", "diverged_at": 1234}
    assert run_status({"status": "ok"}) == "ok" and run_status(diverged) == "diverged at iteration 1234"
    config = {"method": "", "divergence": "jkl", "estimator": "exact", "ratio": "logit", "seed": 3, "use_gan": True}
    assert toy._describe_run({"config": config, "network": "64×3", "provenance": {}, **diverged})["status"] == \
        "diverged at iteration 1234"
    ceiling = toy._describe_run({"kind": "ceiling", "iterations": 3000, "network": "64×3", "seed": 1, "status": "ok"})
    assert {k: ceiling[k] for k in floor} == {**describe_reference("ceiling", nfe=1, seed=1)}
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "samples.json").write_text(json.dumps({"sets": [
        {"name": "teacher-heun", "nfe": 35}, {"name": "ui-jkl-exact-s3", "nfe": 1, "iteration": 1200}]}))
    (tmp_path / "runs" / "ui-jkl-exact-s3").mkdir(parents=True)
    (tmp_path / "runs" / "ui-jkl-exact-s3" / "run.json").write_text(json.dumps(
        {"config": config, "provenance": {}, **diverged}))
    teacher, run = [info for _, _, info in sample_sets(tmp_path / "samples", tmp_path / "runs")]
    assert teacher == {**describe_reference("teacher", 35), "status": "ok"}
    assert run["status"] == "diverged at iteration 1234 (sampled at 1200)"
