"""The report's summary sentences, now in :mod:`lfeval.report.summary` (this name stays as an alias)."""

from ..report.summary import (
                              KIND_TITLES,
                              RANK_CONVENTION,
                              best_explainers,
                              control_flags,
                              control_names,
                              left_out_sentence,
                              summary_sentences,
                              trusted_metrics,
)

__all__ = ["KIND_TITLES", "RANK_CONVENTION", "best_explainers", "control_flags", "control_names",
           "left_out_sentence", "summary_sentences", "trusted_metrics"]
