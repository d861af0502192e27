"""Tables, rankings, plots and the HTML report of a run."""

from . import plots
from .html import Section, write_report
from .ranking import normalise_scores, rank_explainers

__all__ = ["plots", "Section", "write_report", "normalise_scores", "rank_explainers"]
