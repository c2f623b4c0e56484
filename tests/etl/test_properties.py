"""Hypothesis properties of build_panel (random small registries and trade panels)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from twinimpact.errors import TwinImpactWarning
from twinimpact.etl.build import build_panel
from twinimpact.etl.sources import read_trade, read_twinnings

POOL = ("DEU", "FRA", "ITA", "POL", "ESP", "NLD")
YEARS = range(1995, 2004)
FORMS = ("p", "f", "k")


@st.composite
def inputs(draw):
    partners = draw(st.lists(st.sampled_from(POOL[1:]), min_size=1, max_size=5, unique=True))
    reporters = ["DEU"] + (["FRA"] if draw(st.booleans()) else [])
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    rows = [(r, p, y) for r in reporters for p in partners if p != r for y in YEARS]
    trade = pd.DataFrame(rows, columns=["reporter", "partner", "year"])
    trade["value"] = rng.integers(0, 50, len(trade)).astype(float)
    n = draw(st.integers(1, 12))
    links = []
    for i in range(n):
        a, b = draw(st.sampled_from(POOL)), draw(st.sampled_from(POOL))
        links.append((f"c{i}", a, f"d{i}", b, draw(st.integers(1990, 2008)),
                      draw(st.sampled_from(FORMS))))
    twin = pd.DataFrame(links, columns=["city", "country", "partner_city",
                                        "partner_country", "established", "relation"])
    return trade, twin


def _panel(trade, twin, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TwinImpactWarning)
        tw = read_twinnings(twin, match_cities=False)
        return build_panel(read_trade(trade), tw, **kw)


def _oracle_cohorts(trade, twin, counted=("p",)):
    """Slow, obviously correct: earliest counted undirected link per reporter-partner."""
    last = trade["year"].max()
    out = {}
    for (r, p), _ in trade.groupby(["reporter", "partner"]):
        years = [y for _, a, _, b, y, rel in twin.itertuples(index=False, name=None)
                 if rel in counted and a != b and {a, b} == {r, p}]
        first = min(years) if years else None
        out[f"{r}-{p}"] = first if first is not None and first <= last else None
    return out


@settings(max_examples=25, deadline=None)
@given(inputs(), st.randoms(use_true_random=False))
def test_shuffling_rows_gives_the_same_panel(data, rnd) -> None:
    trade, twin = data
    base = _panel(trade, twin).frame
    perm_t = list(range(len(trade)))
    perm_w = list(range(len(twin)))
    rnd.shuffle(perm_t)
    rnd.shuffle(perm_w)
    shuffled = _panel(trade.iloc[perm_t], twin.iloc[perm_w]).frame
    pd.testing.assert_frame_equal(base, shuffled)


@settings(max_examples=25, deadline=None)
@given(inputs())
def test_cohort_is_the_earliest_counted_link(data) -> None:
    trade, twin = data
    f = _panel(trade, twin).frame
    got = f.groupby("unit_id")["cohort"].first()
    for unit, exp in _oracle_cohorts(trade, twin).items():
        assert (pd.isna(got[unit]) and exp is None) or got[unit] == exp, unit
    # with every link type counted
    f_all = _panel(trade, twin, relations="all").frame
    got_all = f_all.groupby("unit_id")["cohort"].first()
    for unit, exp in _oracle_cohorts(trade, twin, counted=FORMS).items():
        assert (pd.isna(got_all[unit]) and exp is None) or got_all[unit] == exp, unit


@settings(max_examples=25, deadline=None)
@given(inputs())
def test_n_twinnings_never_decreases_and_matches_a_count(data) -> None:
    trade, twin = data
    f = _panel(trade, twin).frame
    assert (f.groupby("unit_id")["n_twinnings"].diff().fillna(0) >= 0).all()
    counted = twin[(twin.relation == "p") & (twin.country != twin.partner_country)]
    for row in f.sample(min(len(f), 15), random_state=0).itertuples():
        r, p = row.reporter, row.partner
        exp = int(((((counted.country == r) & (counted.partner_country == p))
                    | ((counted.country == p) & (counted.partner_country == r)))
                   & (counted.established <= row.year)).sum())
        assert row.n_twinnings == exp
    # cohort consistent with rel_time and treated
    treated = f["cohort"].notna()
    assert (f.loc[treated, "rel_time"] == f.loc[treated, "year"] - f.loc[treated, "cohort"]).all()
    assert f.loc[~treated, "rel_time"].isna().all()


@settings(max_examples=25, deadline=None)
@given(inputs(), st.permutations(POOL))
def test_relabelling_countries_relabels_the_panel_only(data, perm) -> None:
    trade, twin = data
    relabel = dict(zip(POOL, perm, strict=True))
    base = _panel(trade, twin).frame
    t2 = trade.assign(reporter=trade.reporter.map(relabel), partner=trade.partner.map(relabel))
    w2 = twin.assign(country=twin.country.map(relabel),
                     partner_country=twin.partner_country.map(relabel))
    new = _panel(t2, w2).frame
    exp = base.assign(reporter=base.reporter.map(relabel), partner=base.partner.map(relabel))
    exp["unit_id"] = exp["reporter"].astype(str) + "-" + exp["partner"].astype(str)
    exp = exp.sort_values(["unit_id", "year"], kind="mergesort").reset_index(drop=True)
    pd.testing.assert_frame_equal(new, exp, check_dtype=False)
    assert np.array_equal(new["n_twinnings"], exp["n_twinnings"])
