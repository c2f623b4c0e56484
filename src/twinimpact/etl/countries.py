"""Country names and codes → ISO 3166-1 alpha-3.

Sources, in order of precedence:

1. the explicit alias table shipped as package data,
   ``twinimpact/data/country_aliases.csv`` (columns ``alias, iso3, kind, note``): common
   English variants ("UK", "South Korea", "Ivory Coast"), German names not in ISO
   ("Russland", "Tschechische Republik"), the UK's constituent countries (Wikipedia lists
   use "England"), and historical names and codes;
2. ``pycountry`` (ISO 3166-1 alpha-2/alpha-3 codes, short, official and common names)
   and its German and French translations (``iso3166-1`` gettext catalogues);
3. ISO 3166-3 codes and names of former countries (``pycountry.historic_countries``).

Matching is on :func:`~twinimpact.etl.names.normalize_name` keys (case, accents and
punctuation ignored). Names of the form "Korea, Republic of" are also matched as
"Republic of Korea". A value that is none of these raises
:class:`~twinimpact.errors.InputError` naming the value, the column and row, and the
closest known name.

Historical entities (a documented choice)
-----------------------------------------
* Renamed countries map to today's code: ``ROM`` → ``ROU`` (Romania's alpha-3 until
  2002, used by TRADHIST and the Yotov et al. gravity panel), Zaire/``ZAR`` → ``COD``,
  Burma/``BUR`` → ``MMR``, Dahomey → ``BEN``, Upper Volta → ``BFA``, Rhodesia → ``ZWE``.
* West Germany / Federal Republic of Germany / FRG / BRD → ``DEU`` (continuity; TRADHIST
  codes West Germany as DEU).
* States that split or merged keep their own ISO 3166-3 code and are **not** assigned to a
  successor, because which successor inherits a link or a trade flow is a research choice:
  USSR/Soviet Union → ``SUN``, Yugoslavia → ``YUG``, Serbia and Montenegro → ``SCG``,
  Czechoslovakia → ``CSK``, East Germany/GDR/DDR → ``DDR``, South Yemen → ``YMD``,
  Netherlands Antilles → ``ANT``. TRADHIST-only codes ``HWI`` (Hawaii) and ``YAR`` (North
  Yemen) are kept as they are.
* Kosovo (not in ISO 3166-1) → ``XKX`` (the user-assigned code used by the EU and the
  World Bank). "Congo" alone → ``COG`` (ISO's short name of the Republic of the Congo).
"""

from __future__ import annotations

import csv
import functools
import gettext
from collections.abc import Mapping
from importlib import resources

import pandas as pd

from ..errors import InputError, format_message, suggest
from .names import normalize_name, row_label

__all__ = [
    "country_aliases", "iso3_codes", "known_countries", "lookup_country", "to_iso3",
    "to_iso3_series",
]

_LANGUAGES = ("de", "fr")


def country_aliases() -> pd.DataFrame:
    """The shipped alias table (``alias, iso3, kind, note``) as a DataFrame."""
    with resources.files("twinimpact").joinpath("data/country_aliases.csv").open(
            encoding="utf-8") as fh:
        return pd.DataFrame(list(csv.DictReader(fh)))


def _name_forms(name: str) -> list[str]:
    forms = [name]
    if ", " in name:  # "Korea, Republic of" -> "Republic of Korea"
        head, tail = name.split(", ", 1)
        forms.append(f"{tail} {head}")
        forms.append(head)
    return forms


@functools.lru_cache(maxsize=1)
def _table() -> tuple[dict[str, str], dict[str, str], frozenset[str]]:
    """(key -> iso3, key -> display name, set of valid codes); built once."""
    import pycountry

    keys: dict[str, str] = {}
    display: dict[str, str] = {}

    def add(name: str | None, iso3: str, *, override: bool = False) -> None:
        if not name:
            return
        for form in _name_forms(name):
            k = normalize_name(form)
            if k and (override or k not in keys):
                keys[k] = iso3
                display.setdefault(k, form)

    codes: set[str] = set()
    # historic first (lowest precedence: later entries of the same key do not override)
    current = list(pycountry.countries)
    for c in current:
        codes.add(c.alpha_3)
        add(c.alpha_3, c.alpha_3, override=True)
        add(c.alpha_2, c.alpha_3, override=True)
    for c in current:
        for attr in ("name", "common_name", "official_name"):
            add(getattr(c, attr, None), c.alpha_3)
    for lang in _LANGUAGES:
        try:
            tr = gettext.translation("iso3166-1", pycountry.LOCALES_DIR, languages=[lang])
        except OSError:  # pragma: no cover - catalogue missing in a stripped install
            continue
        for c in current:
            for attr in ("name", "common_name", "official_name"):
                v = getattr(c, attr, None)
                if v:
                    add(tr.gettext(v), c.alpha_3)
    for c in pycountry.historic_countries:
        codes.add(c.alpha_3)
        if normalize_name(c.alpha_3) not in keys:
            add(c.alpha_3, c.alpha_3)
        add(c.name, c.alpha_3)
    for row in country_aliases().itertuples(index=False):
        add(row.alias, row.iso3, override=True)
        codes.add(row.iso3)
    return keys, display, frozenset(codes)


def known_countries() -> list[str]:
    """Every country name and code that :func:`to_iso3` accepts (display spelling)."""
    _, display, _ = _table()
    return sorted(set(display.values()))


def lookup_country(value: object, aliases: Mapping[str, str] | None = None) -> str | None:
    """ISO3 code of a country name/code, or ``None`` when unknown (missing → ``None``).

    ``aliases`` maps extra names to ISO3 codes and takes precedence over everything.

    >>> lookup_country("Frankreich"), lookup_country("ROM"), lookup_country("West Germany")
    ('FRA', 'ROU', 'DEU')
    >>> lookup_country("Atlantis") is None
    True
    """
    if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
        return None
    raw = str(value).strip()
    if not raw:
        return None
    if aliases:
        for k, v in aliases.items():
            if normalize_name(k) == normalize_name(raw):
                return str(v)
    keys, _, _ = _table()
    key = normalize_name(raw)
    hit = keys.get(key)
    if hit is None and "," in raw:  # "Albany, United States" style: try the last part
        hit = keys.get(normalize_name(raw.rsplit(",", 1)[1]))
    if hit is None and "(" in raw:  # "Witebsk (Belarus)"
        inner = raw[raw.find("(") + 1:raw.rfind(")")]
        hit = keys.get(normalize_name(inner))
    return hit


def _unknown_error(value: object, column: str | None, row: object) -> InputError:
    close = suggest(value, known_countries(), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    where = []
    if column is not None:
        where.append(f"column {column!r}")
    if row is not None:
        where.append(f"row {row_label(row)!r}")
    return InputError(format_message(
        "unknown country name or code", where=", ".join(where) or None, seen=value,
        fix=hint + "use an ISO 3166 code or an English/German name, or pass "
            "country_aliases={'<name>': '<ISO3>'}"))


def to_iso3(value: object, *, aliases: Mapping[str, str] | None = None,
            column: str | None = None, row: object = None) -> str:
    """ISO 3166-1 alpha-3 code of a country name or code (see the module docstring).

    Raises :class:`~twinimpact.errors.InputError` naming the value, ``column``/``row``
    and the closest known name when the value is unknown or missing.

    >>> to_iso3("Vereinigtes Königreich"), to_iso3("gb"), to_iso3("USSR")
    ('GBR', 'GBR', 'SUN')
    """
    hit = lookup_country(value, aliases)
    if hit is None:
        raise _unknown_error(value, column, row)
    return hit


def to_iso3_series(values: pd.Series, *, column: str,
                   aliases: Mapping[str, str] | None = None,
                   allow_missing: bool = True) -> pd.Series:
    """Vectorised :func:`to_iso3` over a Series (one lookup per unique value).

    Missing values stay missing (``pd.NA``) when ``allow_missing``; an unknown value raises
    naming ``column`` and the first row (index label) where it occurs.
    """
    uniq = pd.unique(values.dropna())
    mapping: dict[object, str] = {}
    for u in uniq:
        hit = lookup_country(u, aliases)
        if hit is None:
            row = values.index[(values == u).to_numpy()][0]
            raise _unknown_error(u, column, row)
        mapping[u] = hit
    out = values.map(mapping).astype("string")
    if not allow_missing and out.isna().any():
        row = out.index[out.isna().to_numpy()][0]
        raise InputError(format_message(
            f"missing country in column {column!r}", where=f"row {row_label(row)!r}",
            fix="fill in the country or drop the row before reading"))
    return out


def iso3_codes() -> frozenset[str]:
    """All codes :func:`to_iso3` can return."""
    return _table()[2]

