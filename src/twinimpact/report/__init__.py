"""Tables, figures and reports; depends on the results protocol only."""

from .plots import plot_event_study, plot_honest_did
from .synthetic import plot_synthetic, plot_weights
from .tables import table

__all__ = ["plot_event_study", "plot_honest_did", "plot_synthetic", "plot_weights", "table"]
