"""Inputs that used to give a confident wrong number (issue 16): each now gives the right
number or a named error / warning that says what, where, the value seen and the fix.

Cases: one and few clusters; gaps in time (biennial df_het); datetime year / cohort columns
(mpdta); infinite values and negative weights; trade years and values; delimited text
files; ambiguous dates; pandas / polars / pyarrow inputs and non-tables.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import twinimpact as ti
from twinimpact.errors import (
    DataWarning,
    FewClustersWarning,
    InputError,
    TwinImpactError,
)
from twinimpact.results import FEW_CLUSTERS

from .conftest import DATA

MP = {"outcome": "lemp", "unit": "countyreal", "time": "year", "cohort": "first.treat"}
HET = {"outcome": "dep_var", "unit": "unit", "time": "year", "cohort": "g"}
#: mpdta overall ATT of the imputation / two-stage estimators (R didimputation / did2s;
#: tests/reference/imputation) to the digits the issue quotes
MPDTA_ATT = -0.0477


@pytest.fixture(scope="module")
def het_even() -> pd.DataFrame:
    het = pd.read_parquet(DATA / "did2s" / "df_het.parquet")
    return het[het["year"] % 2 == 0].reset_index(drop=True)


def _quiet(fn, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **k)


# ------------------------------------------------------------------ clusters
ONE_CLUSTER_CALLS = {
    "twfe": lambda d: ti.twfe(d, **MP, cluster="one"),
    "event_study": lambda d: ti.event_study(d, **MP, cluster="one"),
    "sun_abraham": lambda d: ti.sun_abraham(d, **MP, cluster="one"),
    "imputation": lambda d: ti.imputation(d, **MP, cluster="one"),
    "did2s": lambda d: ti.did2s(d, **MP, cluster="one"),
    "callaway_santanna": lambda d: ti.callaway_santanna(d, **MP, cluster="one"),
    "ppml": lambda d: ti.ppml(d.assign(y=np.exp(d["lemp"])), outcome="y",
                              regressors=["treat"], fixed_effects=("countyreal", "year"),
                              cluster="one"),
    "poisson_event_study": lambda d: ti.poisson_event_study(
        d.assign(y=np.exp(d["lemp"])), outcome="y", unit="countyreal", time="year",
        cohort="first.treat", cluster="one"),
}


@pytest.mark.parametrize("name", sorted(ONE_CLUSTER_CALLS))
def test_one_cluster_is_refused(mpdta, name):
    d = mpdta.assign(one=1)
    with pytest.raises(InputError, match="at least two clusters") as exc:
        _quiet(ONE_CLUSTER_CALLS[name], d)
    msg = str(exc.value)
    assert "cluster='one'" in msg and "1 cluster(s)" in msg and "Fix:" in msg


def test_few_clusters_flagged_and_point_to_wild_bootstrap(mpdta):
    d = mpdta.assign(region=mpdta["countyreal"] % 8)
    with pytest.warns(FewClustersWarning, match="wild_cluster_bootstrap"):
        r = ti.twfe(d, **MP, cluster="region")
    few = r.diagnostics["few_clusters"]
    assert few["n_clusters"] == 8 and few["threshold"] == FEW_CLUSTERS
    assert any("wild_cluster_bootstrap" in n for n in r.diagnostics["notes"])
    assert "only 8 clusters" in r.summary()
    # the SE is still the CRV1 number (flagged, not changed)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        many = ti.twfe(d.assign(region=d["countyreal"]), **MP, cluster="region")
    assert "few_clusters" not in many.diagnostics


def test_few_clusters_warned_once_per_estimation(mpdta):
    d = mpdta.assign(region=mpdta["countyreal"] % 8)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        r = ti.sun_abraham(d, **MP, cluster="region")
        agg = r.aggregate("simple")
    assert sum(issubclass(w.category, FewClustersWarning) for w in rec) == 1
    assert agg.diagnostics["few_clusters"]["n_clusters"] == 8
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        cs = ti.callaway_santanna(d, **MP, cluster="region")
        aggs = [cs.aggregate(k) for k in ("simple", "dynamic", "group")]
    assert sum(issubclass(w.category, FewClustersWarning) for w in rec) == 1
    assert all(a.diagnostics["few_clusters"]["n_clusters"] == 8 for a in aggs)


# ------------------------------------------------------------------ gaps in time
def test_sun_abraham_biennial_matches_cs_and_imputation(het_even):
    with pytest.warns(DataWarning, match="reference period is rel_time -2"):
        sa = ti.sun_abraham(het_even, **HET)
    assert sa.spec["ref"] == (-2,)
    att_sa = float(sa.aggregate("simple").params["ATT"])
    att_cs = float(_quiet(ti.callaway_santanna, het_even, **HET).aggregate("simple")
                   .params["ATT"])
    att_imp = float(_quiet(ti.imputation, het_even, **HET).params["ATT"])
    # SA with never-treated controls and CS (never treated) estimate the same post cells
    assert att_sa == pytest.approx(att_cs, rel=1e-8)
    assert att_sa == pytest.approx(att_imp, abs=0.05)
    assert att_sa > 2  # was -0.602 with a reference period that does not exist


def test_event_study_and_poisson_biennial_use_last_observed_pre_period(het_even):
    with pytest.warns(DataWarning, match="skips periods"):
        es = ti.event_study(het_even, **HET)
    assert es.spec["ref"] == (-2,)
    assert np.isfinite(es.params["ATT"]) and "rel_time=-2" not in es.terms
    assert any("skips periods" in n for n in es.diagnostics["notes"])
    # the same fit with the reference period stated explicitly
    explicit = _quiet(ti.event_study, het_even, **HET, ref=-2)
    np.testing.assert_allclose(es.params, explicit.params)
    small = het_even[het_even["unit"] <= 600]
    y = small.assign(y=np.exp(small["dep_var"] / 5))
    kw = {**HET, "outcome": "y"}
    pes = _quiet(ti.poisson_event_study, y, **kw)
    assert pes.spec["ref"] == (-2,)
    pre = [t for t in pes.terms if t.startswith("rel_time=-")]
    assert np.abs(pes.params[pre]).max() < 0.1 < pes.params["ATT"]


def test_irregular_gap_is_refused_naming_the_period(mpdta):
    d = mpdta[mpdta["year"] != 2005]  # cohort 2006 loses its period -1 (2005)
    for fn in (ti.event_study, ti.sun_abraham):
        with pytest.raises(InputError, match="no period 2005") as exc:
            _quiet(fn, d, **MP)
        assert "cohort 2006" in str(exc.value) and "Fix:" in str(exc.value)
    # an explicit reference period every cohort has is accepted
    r = _quiet(ti.event_study, d, **MP, ref=-3)
    assert r.spec["ref"] == (-3,)


# ------------------------------------------------------------------ datetime columns
def _mpdta_dates(m: pd.DataFrame) -> pd.DataFrame:
    ft = m["first.treat"].where(m["first.treat"] > 0)
    return m.assign(year=pd.to_datetime(m["year"].astype(str), format="%Y"),
                    cohort_date=pd.to_datetime(ft.astype("Int64").astype(str), format="%Y",
                                               errors="coerce"))


@pytest.mark.parametrize("est", ["imputation", "did2s"])
def test_datetime_year_and_cohort_are_years(mpdta, est):
    d = _mpdta_dates(mpdta)
    assert d["cohort_date"].isna().sum() == 1545  # never-treated rows are NaT
    r = _quiet(getattr(ti, est), d, **{**MP, "cohort": "cohort_date"})
    ref = _quiet(getattr(ti, est), mpdta, **MP)
    assert r.nobs == 2500
    assert round(float(r.params["ATT"]), 4) == MPDTA_ATT
    assert float(r.params["ATT"]) == pytest.approx(float(ref.params["ATT"]), abs=1e-12)


def test_datetime_cohorts_in_cs_and_poisson(mpdta):
    d = _mpdta_dates(mpdta)
    kw = {**MP, "cohort": "cohort_date"}
    cs = _quiet(ti.callaway_santanna, d, **kw)
    assert sorted(cs.to_frame()["cohort"].unique()) == [2004, 2006, 2007]
    pes = _quiet(ti.poisson_event_study, d.assign(y=np.exp(d["lemp"])),
                 **{**kw, "outcome": "y"})
    assert pes.nobs == 2500


def test_dates_inside_a_year_are_refused(mpdta):
    d = mpdta.assign(year=pd.to_datetime(mpdta["year"].astype(str) + "-07-01"))
    with pytest.raises(InputError, match="dates inside a year") as exc:
        _quiet(ti.twfe, d, **MP)
    assert "2003-07-01" in str(exc.value) and ".dt.year" in str(exc.value)


# ------------------------------------------------------------------ numbers that are not numbers
@pytest.mark.parametrize("est", ["twfe", "event_study", "imputation", "callaway_santanna"])
def test_infinite_outcome_is_refused(mpdta, est):
    d = mpdta.copy()
    d.loc[7, "lemp"] = np.inf
    with pytest.raises(InputError, match="infinite") as exc:
        _quiet(getattr(ti, est), d, **MP)
    assert "'lemp'" in str(exc.value) and "row 7" in str(exc.value)


@pytest.mark.parametrize("est", ["twfe", "event_study"])
def test_negative_weights_are_refused(mpdta, est):
    d = mpdta.assign(w=1.0)
    d.loc[3, "w"] = -2.0
    with pytest.raises(InputError, match="non-negative") as exc:
        _quiet(getattr(ti, est), d, **MP, weights="w")
    assert "-2.0" in str(exc.value) and "countyreal = 8001" in str(exc.value)


def _trade(**over) -> pd.DataFrame:
    t = pd.DataFrame({"reporter": ["DEU"] * 3, "partner": ["FRA", "ITA", "ESP"],
                      "year": [1990, 1990, 1990], "value": [1.0, 2.0, 3.0]})
    return t.assign(**over)


def test_read_trade_refuses_inf_and_implausible_years():
    with pytest.raises(InputError, match="infinite trade values"):
        ti.read_trade(_trade(value=[1.0, np.inf, 3.0]))
    with pytest.raises(InputError, match="implausible trade year") as exc:
        ti.read_trade(_trade(year=[1990, 2099, 1990]))
    assert "2099" in str(exc.value)
    with pytest.raises(InputError, match="4-digit calendar years"):
        ti.read_trade(_trade(year=[85, 86, 87]))


def test_delimited_text_files(tmp_path):
    semi = tmp_path / "trade.csv"
    semi.write_text("reporter;partner;year;value\nDEU;FRA;1990;1.5\n", encoding="utf-8")
    with pytest.raises(InputError, match="';'-separated") as exc:
        ti.read_trade(semi)
    assert "sep=';'" in str(exc.value) and "[trade.options]" in str(exc.value)
    assert ti.read_trade(semi, sep=";")["value"].tolist() == [1.5]
    latin = tmp_path / "latin.csv"
    latin.write_bytes("city,country,partner_city,partner_country\nKöln,DEU,Lille,FRA\n"
                      .encode("latin-1"))
    with pytest.raises(InputError, match="not utf-8 text") as exc:
        ti.read_twinnings(latin)
    assert "encoding='latin-1'" in str(exc.value)
    tw = ti.read_twinnings(latin, encoding="latin-1", match_cities=False)
    assert tw["city"].tolist() == ["Köln"]
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(InputError, match="empty"):
        ti.read_trade(empty)


def test_ambiguous_dates_need_a_format():
    raw = pd.DataFrame({"city": ["Köln"], "country": ["DEU"], "partner_city": ["Lille"],
                        "partner_country": ["FRA"], "established": ["03/10/1983"]})
    with pytest.raises(InputError, match="ambiguous date") as exc:
        ti.read_twinnings(raw, match_cities=False)
    assert "date_format='%d/%m/%Y'" in str(exc.value)
    tw = ti.read_twinnings(raw, match_cities=False, date_format="%d/%m/%Y")
    assert str(tw["established_date"].iloc[0].date()) == "1983-10-03"
    # the column shows the order: 13/10 can only be day first
    raw2 = pd.concat([raw, raw.assign(established="13/10/1984")], ignore_index=True)
    tw2 = ti.read_twinnings(raw2, match_cities=False)
    assert [str(d.date()) for d in tw2["established_date"]] == ["1983-10-03", "1984-10-13"]


# ------------------------------------------------------------------ inputs
def test_pyarrow_and_polars_tables_give_the_pandas_estimate(mpdta):
    ref = _quiet(ti.imputation, mpdta, **MP)
    r_pa = _quiet(ti.imputation, pa.Table.from_pandas(mpdta), **MP)
    assert float(r_pa.params["ATT"]) == pytest.approx(float(ref.params["ATT"]), abs=1e-12)
    pl = pytest.importorskip("polars")
    r_pl = _quiet(ti.callaway_santanna, pl.from_pandas(mpdta), **MP)
    r_pd = _quiet(ti.callaway_santanna, mpdta, **MP)
    np.testing.assert_allclose(r_pl.params, r_pd.params)
    t = ti.read_trade(pl.from_pandas(_trade()))
    assert len(t) == 3


@pytest.mark.parametrize("bad", [np.zeros((3, 4)), {"y": [1, 2]}, [1, 2, 3]],
                         ids=["ndarray", "dict", "list"])
@pytest.mark.parametrize("est", ["twfe", "callaway_santanna", "ppml", "synthetic_did"])
def test_non_tables_get_a_clear_error(bad, est):
    kw = {"ppml": {"outcome": "y", "regressors": ["x"]},
          "synthetic_did": {"outcome": "y", "unit": "u", "time": "t", "treated": "d"}
          }.get(est, {"outcome": "y", "unit": "u", "time": "t", "cohort": "g"})
    with pytest.raises(InputError, match="must be a pandas DataFrame") as exc:
        getattr(ti, est)(bad, **kw)
    assert "Fix:" in str(exc.value)
    assert isinstance(exc.value, TwinImpactError)


# ------------------------------------------------------------------ outputs other programs read
def test_excel_cells_never_become_formulas(tmp_path, mpdta):
    openpyxl = pytest.importorskip("openpyxl")
    r = _quiet(ti.twfe, mpdta, **MP)
    p = tmp_path / "t.xlsx"
    label = '=HYPERLINK("http://example.com","x")'
    ti.table({label: r, "+1": r, "@SUM(A1)": r}, format="xlsx", path=p)
    book = openpyxl.load_workbook(p)
    texts = [c for ws in book.worksheets for row in ws.iter_rows() for c in row
             if isinstance(c.value, str) and c.value.startswith(("=", "+", "@"))]
    assert any(c.value == label for c in texts)
    assert all(c.data_type == "s" for c in texts)  # stored as text, never 'f' (formula)
    assert pd.read_excel(p, sheet_name="table").columns[1] == label


def test_headline_horizon_is_the_one_the_estimate_averages(mpdta):
    from types import SimpleNamespace

    from twinimpact.report.headline import headline_sentence, pick_headline

    study = SimpleNamespace(alpha=0.05, headline="x", headline_term="ATT", transform="log",
                            headline_subject="Employment")
    # imputation's ATT averages every treated observation (event times 0..3 in mpdta),
    # not the 2 event-time rows of the window (lags=1): the de_exports headline bug
    imp = _quiet(ti.event_study, mpdta, **MP, leads=2, lags=1, method="imputation")
    text, _ = headline_sentence(pick_headline({"x": imp}, study), study, max_rel_time=3.0)
    assert "2 years" not in text and "to 3 years after it" in text
    # the TWFE event study's ATT is the mean of its rel_time >= 0 rows; the last is binned
    es = _quiet(ti.event_study, mpdta, **MP, leads=2, lags=1)
    text, _ = headline_sentence(pick_headline({"x": es}, study), study, max_rel_time=3.0)
    assert "on average over the 2 years after the first twinning (the last of them " \
           "pooling all later years)" in text


def test_bundled_case_studies_count_their_treated_cities():
    from twinimpact.cli import bundled_studies
    from twinimpact.studies.spec import load_study

    for name, path in bundled_studies().items():
        study = load_study(path)
        if study.kind != "case_study":
            continue
        cities = study.case["treated_city"]
        n = 1 if isinstance(cities, str) else len(cities)
        text = " ".join([study.title, study.description, *study.caveats]).lower()
        if n > 1:
            assert "one treated city" not in text and "one-city" not in text, name
