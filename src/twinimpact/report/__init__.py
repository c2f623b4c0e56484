"""Tables, figures and reports; depends on the results protocol only."""

from .diagnostic_plots import plot_bacon, plot_pretrend_power
from .plots import plot_event_study, plot_honest_did
from .synthetic import plot_synthetic, plot_weights
from .tables import table

__all__ = ["plot_bacon", "plot_event_study", "plot_honest_did", "plot_pretrend_power",
           "plot_synthetic", "plot_weights", "table"]
