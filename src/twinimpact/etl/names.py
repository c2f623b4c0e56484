"""Name normalisation shared by the country and city crosswalks.

Registries spell the same place in many ways: accents or not ("Péronne"/"Peronne"), German
transliterations ("Xi`an"), hyphens ("Saint-Lô"), bracketed extras ("Vratimov
(Rattimau)", "Qianjiang (Provinz Hubei)"), qualifiers after a comma ("Albany, Oregon").
:func:`normalize_name` gives one comparison key per spelling; :func:`name_variants` lists
the keys worth trying for one raw name, best first.

Both are pure functions of a string (no data needed), so the crosswalks can cache results
per unique name.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["is_district", "name_variants", "normalize_name", "row_label"]

_TRANSLIT = str.maketrans({
    "ß": "ss", "ø": "o", "Ø": "o", "æ": "ae", "Æ": "ae", "œ": "oe", "Œ": "oe",
    "ł": "l", "Ł": "l", "đ": "d", "Đ": "d", "ı": "i", "þ": "th",
})
_PUNCT = re.compile(r"[\-‐‑–—_'‘’`´ʼ.,/;:\"!?*&+()\[\]]+")
#: Leading abbreviations expanded as extra variants ("St. Brieuc" -> "saint brieuc").
_ABBREV = {"st": ("saint", "sankt"), "ste": ("sainte",), "s": ("san", "sao")}
_SPACE = re.compile(r"\s+")
_BRACKET = re.compile(r"\(([^()]*)\)|\[([^\[\]]*)\]")

#: Bracketed or trailing words that describe a region/qualifier, not a name.
_QUALIFIER_WORDS = (
    "provinz", "province", "prov", "region", "kreis", "landkreis", "county", "dep",
    "departement", "département", "stadt", "city", "gemeinde", "samtgemeinde",
    "verbandsgemeinde", "amt", "bezirk", "district", "ehem", "krs",
)
_DISTRICT = re.compile(r"\((land)?kreis\)|^(land)?kreis\s|-kreis\b", re.IGNORECASE)


def normalize_name(value: object) -> str:
    """Comparison key of a place name: case-folded, accents and punctuation removed.

    >>> normalize_name("Saint-Étienne")
    'saint etienne'
    >>> normalize_name("Xi`an") == normalize_name("Xi'an")
    True
    >>> normalize_name("  Groß-Gerau ")
    'gross gerau'
    """
    s = str(value).translate(_TRANSLIT)
    s = unicodedata.normalize("NFKD", s)
    s = "".join(ch for ch in s if not unicodedata.combining(ch))
    s = s.casefold()
    s = _PUNCT.sub(" ", s)
    return _SPACE.sub(" ", s).strip()


def is_district(value: object) -> bool:
    """True for German district names ("Borken (Kreis)", "Alb-Donau-Kreis"): not a city."""
    return bool(_DISTRICT.search(str(value)))


def name_variants(value: object) -> list[str]:
    """Normalised keys to try for a raw place name, the most literal first.

    Order: the whole name; the name without bracketed parts; the part before a comma or
    slash; then each bracketed part that is not a qualifier (often a German exonym,
    e.g. "Sopron (Ödenburg)"); then the same with a leading "St."/"Ste." spelled out
    ("saint", "sankt", "sainte"). Duplicates and empty strings are removed.

    >>> name_variants("Vratimov (Rattimau)")
    ['vratimov rattimau', 'vratimov', 'rattimau']
    >>> name_variants("Qianjiang (Provinz Hubei)")
    ['qianjiang provinz hubei', 'qianjiang']
    >>> name_variants("Albany, Oregon")
    ['albany oregon', 'albany']
    >>> name_variants("St. Brieuc")
    ['st brieuc', 'saint brieuc', 'sankt brieuc']
    """
    raw = str(value).strip()
    out: list[str] = [normalize_name(raw)]
    inner = [a or b for a, b in _BRACKET.findall(raw)]
    outer = _BRACKET.sub(" ", raw)
    out.append(normalize_name(outer))
    for sep in (",", "/", " - "):
        if sep in outer:
            out.append(normalize_name(outer.split(sep)[0]))
    for part in inner:
        key = normalize_name(part)
        words = key.split()
        if words and words[0] not in _QUALIFIER_WORDS:
            out.append(key)
    for key in list(out):
        head, _, rest = key.partition(" ")
        if rest and head in _ABBREV:
            out.extend(f"{full} {rest}" for full in _ABBREV[head])
    seen: set[str] = set()
    return [k for k in out if k and not (k in seen or seen.add(k))]


def row_label(label: object) -> object:
    """A row label as a plain Python value (``np.int64(3)`` -> ``3``) for messages."""
    item = getattr(label, "item", None)
    return item() if callable(item) else label
