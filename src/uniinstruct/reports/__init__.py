"""The paper's tables with our numbers beside them: pure functions from result files to DataFrames.

Published numbers come from ``uniinstruct/paper_data`` (strings exactly as transcribed, with their source). Our numbers
come from result files the pipeline wrote: ``results/paper/<profile>-<divergence>.json`` (GPU runs of the paper tier,
copied there by ``uniinstruct paper fid``), ``results/toy/metrics.json`` and ``results/digits/metrics.json``. A cell we
have no run for says :data:`NOT_RUN`; nothing is ever filled with a placeholder number.

Modules: ``common`` ("not run", labels, writing a report), ``paper`` (the paper tier's tables), ``cells`` (the
CPU tiers' cells), ``tiers`` (the tables that also read the CPU tiers), ``toy`` and ``digits`` (each CPU tier's own
tables), ``unification`` and ``readme`` (the README's status section).
"""

from uniinstruct.reports.cells import TOY_MEANS
from uniinstruct.reports.common import (DIVERGENCE_LABELS, NOT_IN_PAPER, NOT_RUN, describe_hardware, label,
                                        without_sources, write_report)
from uniinstruct.reports.digits import gan_effect, run_table, summary_table
from uniinstruct.reports.paper import (PAPER_TABLES, PROFILE_TABLES, PaperTable, paper_run_files, paper_runs,
                                       paper_table_intro, paper_table_report, paper_table_summary, result_table,
                                       run_status)
from uniinstruct.reports.readme import README_BEGIN, README_END, splice_readme
from uniinstruct.reports.tiers import (TIER_TABLES, TierTable, divergence_ablation, status_table, teacher_vs_student,
                                       tier_table_report)
from uniinstruct.reports.toy import ablation_frames, ablation_table, observations
from uniinstruct.reports.unification import (UNIFICATION_CAPTION, unification_markdown, unification_report,
                                             unification_table)

__all__ = ["DIVERGENCE_LABELS", "NOT_IN_PAPER", "NOT_RUN", "PAPER_TABLES", "PROFILE_TABLES", "README_BEGIN",
           "README_END", "TIER_TABLES", "TOY_MEANS", "UNIFICATION_CAPTION", "PaperTable", "TierTable",
           "ablation_frames", "ablation_table", "describe_hardware", "divergence_ablation", "gan_effect", "label",
           "observations", "paper_run_files", "paper_runs", "paper_table_intro", "paper_table_report",
           "paper_table_summary", "result_table", "run_status", "run_table", "splice_readme", "status_table",
           "summary_table", "teacher_vs_student", "tier_table_report", "unification_markdown", "unification_report",
           "unification_table", "without_sources", "write_report"]
