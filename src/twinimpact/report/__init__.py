"""Tables, figures and reports; depends on the results protocol only."""

from .plots import plot_event_study
from .tables import table

__all__ = ["plot_event_study", "table"]
