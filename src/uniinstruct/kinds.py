"""What a row of a tier's metrics describes: the one vocabulary of the ``kind`` field of ``results/toy/metrics.json``
and ``results/digits/metrics.json``, with the fields that tell two rows of one kind apart.

No dependencies: the tiers' pipelines import it in every worker process.
"""

from __future__ import annotations

from collections.abc import Mapping

ROW_KINDS = {
    "data": "real images scored as if they were samples: the floor that sampling noise sets (digits: a real subset)",
    "teacher": "the teacher's multi-step Heun sampler; toy: its ``teacher`` field says which, analytic or learned",
    "ceiling": "the one-step capacity ceiling (toy): the generator regressed onto the teacher's ODE map; its "
               "``regression_steps`` field: how many steps",
    "uni-instruct": "a one-step student distilled by Uni-Instruct (its ``divergence``, ``estimator``, ...)",
    "method": "a one-step student distilled by a prior method; its ``method`` field names it",
}
STUDENT_KINDS = ("uni-instruct", "method")          # the distilled one-step students


def run_kind(config: Mapping) -> str:
    """The kind of a distillation run, from its settings (a ``run.json``'s ``config``)."""
    return "method" if config["method"] else "uni-instruct"


def describe_run(config: Mapping) -> dict:
    """The fields of a distillation run's metrics row that come from its settings (a ``run.json``'s ``config``), the
    same for every tier: its kind, method or divergence and estimator, whether it has the GAN term (a bool), seed
    and NFE."""
    method = config["method"]
    return {"kind": run_kind(config), "method": method, "divergence": "" if method else config["divergence"],
            "estimator": "" if method else config["estimator"], "gan": bool(config["use_gan"]),
            "seed": config["seed"], "nfe": 1}


def describe_reference(kind: str, nfe: int, seed: int = -1) -> dict:
    """The same fields for a row that is not a distillation run (the real-data floor, a teacher, the capacity
    ceiling): no method, divergence or estimator, no GAN term; ``seed`` -1 when the row has none."""
    if kind in STUDENT_KINDS or kind not in ROW_KINDS:
        raise ValueError(f"{kind!r} is not a reference kind; valid: "
                         f"{', '.join(k for k in ROW_KINDS if k not in STUDENT_KINDS)}")
    return {"kind": kind, "method": "", "divergence": "", "estimator": "", "gan": False, "seed": seed, "nfe": nfe}


def run_status(info: Mapping) -> str:
    """A run's status as its metrics row shows it, from its ``run.json``: ``ok`` or ``diverged at iteration N``."""
    return "ok" if info["status"] == "ok" else f"diverged at iteration {info['diverged_at']}"


def kind_label(row: Mapping) -> str:
    """A row's kind with its detail, as the tables show it: ``teacher (learned)``, ``ceiling (3000 regression
    steps)``; the other kinds (and a teacher without a ``teacher`` field) as they are."""
    kind = row["kind"]
    if kind not in ROW_KINDS:
        raise ValueError(f"unknown row kind {kind!r}; valid: {', '.join(ROW_KINDS)}")
    if kind == "teacher" and row.get("teacher"):
        return f"teacher ({row['teacher']})"
    if kind == "ceiling":
        return f"ceiling ({row['regression_steps']} regression steps)"
    return kind
