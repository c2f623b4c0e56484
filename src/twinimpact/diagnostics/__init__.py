"""Credibility diagnostics: which comparisons an estimate rests on (Goodman-Bacon)."""
