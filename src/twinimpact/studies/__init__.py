"""Studies: one TOML file describes a study; ``run_study`` runs it end to end.

:mod:`.spec` holds the study file schema, :mod:`.runner` orchestrates a run, and each study
kind (panel, gravity, case study) is registered in :mod:`.kinds`.
"""
