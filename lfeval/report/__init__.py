"""Tables, rankings, plots and the HTML report of a run.

:mod:`~lfeval.report.ranking` ranks explainers (1 = best), :mod:`~lfeval.report.plots` draws the figures,
:mod:`~lfeval.report.summary` writes the summary sentences, :mod:`~lfeval.report.html` the self-contained page
format and :mod:`~lfeval.report.page` assembles a run's page from plain data (:class:`RunPage`), with
:mod:`~lfeval.report.pairs`' section for a run's pair explanations.
"""

from . import page, pairs, plots, summary
from .html import Section, write_report
from .page import RunPage, write_run_page
from .ranking import normalise_scores, rank_explainers

__all__ = ["page", "pairs", "plots", "summary", "Section", "write_report", "RunPage", "write_run_page",
           "normalise_scores", "rank_explainers"]
