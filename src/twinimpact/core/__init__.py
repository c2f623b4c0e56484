"""The low-level floor shared by estimators and inference.

Fixed-effect solvers (:mod:`.fe`), sandwich / cluster variances (:mod:`.vcov`), input
validation and the one panel preparation (:mod:`.validation`) and the two-stage
(imputation / did2s) kernel (:mod:`.two_stage`). Modules here import nothing from
``estimators``, ``inference``, ``report`` or ``studies``: arrows point down only.
"""
