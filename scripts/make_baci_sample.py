"""Build data/raw/trade_baci_sample: shipped TRADHIST flows rewritten in CEPII BACI layout.

The bundled study ``studies/de_exports_baci.toml`` reads this folder with
``read_trade(folder, format="baci")`` the way a user reads a downloaded BACI archive: one
``BACI_<classification>_Y<year>_V<release>.csv`` per year with columns ``t,i,j,k,v,q`` and
a ``country_codes_V<release>.csv`` table. The VALUES are real (German exports in
``data/raw/trade_tradhist_4rep``, current GBP, unchanged); only the layout is BACI's.
TRADHIST has no product detail, so ``k`` is 999999 (one all-products row per flow) and
``q`` is empty. Country codes are ISO 3166 numeric (former countries: ISO 3166-3 numeric,
e.g. 810 USSR); TRADHIST's ROM is written as Romania's ROU (642), as ``read_trade``
normalises it; codes without an ISO numeric code would get numbers from 900 up.

Run from the repository root: ``python scripts/make_baci_sample.py``.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pandas as pd
import pycountry

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from twinimpact.etl.countries import lookup_country  # noqa: E402

SRC = ROOT / "data" / "raw" / "trade_tradhist_4rep" / "tradhist_gbr_usa_fra_deu_1870_2014.csv"
OUT = ROOT / "data" / "raw" / "trade_baci_sample"
REPORTER, FIRST, LAST = "DEU", 1960, 2014
RELEASE = "Vtradhist"


def numeric_codes(codes: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    spare = 900
    for c in sorted(codes):
        hit = pycountry.countries.get(alpha_3=c)
        if hit is None:
            hit = next((h for h in pycountry.historic_countries if h.alpha_3 == c
                        and getattr(h, "numeric", None)), None)
        if hit is not None and int(hit.numeric) not in out.values():
            out[c] = int(hit.numeric)
        else:
            while spare in out.values():
                spare += 1
            out[c] = spare
    return out


def main() -> None:
    df = pd.read_csv(SRC, keep_default_na=False, na_values=[""])
    df = df[(df.origin_country_code == REPORTER) & df.year.between(FIRST, LAST)
            & df.exports.notna()]
    # TRADHIST's old code ROM is Romania (ROU since 2002), as read_trade normalises it
    df = df.assign(destination_country_code=df.destination_country_code.map(
        lambda c: lookup_country(c) or c))
    codes = numeric_codes(sorted(set(df.origin_country_code) | set(df.destination_country_code)))
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.csv"):
        old.unlink()
    for year, g in df.groupby("year"):
        rows = pd.DataFrame({"t": year, "i": g.origin_country_code.map(codes),
                             "j": g.destination_country_code.map(codes), "k": 999999,
                             "v": g.exports, "q": ""})
        rows.sort_values(["i", "j"]).to_csv(OUT / f"BACI_TRADHIST_Y{year}_{RELEASE}.csv",
                                            index=False)
    with (OUT / f"country_codes_{RELEASE}.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["country_code", "country_name", "country_iso2", "country_iso3"])
        for iso3, num in sorted(codes.items(), key=lambda kv: kv[1]):
            c = pycountry.countries.get(alpha_3=iso3)
            name = c.name if c else next((h.name for h in pycountry.historic_countries
                                          if h.alpha_3 == iso3), iso3)
            w.writerow([num, name, c.alpha_2 if c else "", iso3])
    print(f"{len(df)} flows, {df.year.nunique()} years, {len(codes)} countries -> {OUT}")


if __name__ == "__main__":
    main()
