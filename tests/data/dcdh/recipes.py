"""The data sets of the did_multiplegt reference cases, rebuilt from the files in this folder.

Used by ``make_reference.py`` (to run the oracle) and by
``tests/estimators/test_did_multiplegt.py`` (to run twinimpact on the same data), so both
see exactly the same frames. ``RECIPES`` describes each in words (also written to
``oracle_cases.json``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent


def synthetic(seed: int = 20261130) -> pd.DataFrame:
    """Non-binary treatment (number of links 0..3) that goes up and down, string ids, an
    unbalanced panel and a region cluster; written to synthetic.csv."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(120):
        region = f"R{i % 9}"
        base = int(rng.integers(0, 2))
        start = int(rng.integers(2, 12)) if rng.random() < 0.7 else 99
        step = int(rng.choice([1, 2])) * (1 if rng.random() < 0.65 or base == 0 else -1)
        end = start + int(rng.integers(3, 8)) if rng.random() < 0.3 else 99
        ui = rng.normal()
        for t in range(1, 13):
            links = base + (step if start <= t < end else 0)
            links = max(links, 0)
            y = ui + 0.2 * t + 0.5 * links + rng.normal(scale=0.5)
            rows.append((f"u{i:03d}", 2000 + t, region, links, y))
    df = pd.DataFrame(rows, columns=["unit", "period", "region", "links", "y"])
    df = df.drop(index=rng.choice(len(df), size=60, replace=False)).reset_index(drop=True)
    return df


def datasets(folder: Path = HERE) -> dict[str, pd.DataFrame]:
    """Every data set of the reference cases, by name."""
    fi = pd.read_csv(folder / "favara_imbs.csv.gz")
    wp = pd.read_csv(folder / "wagepan.csv.gz")
    wpc = wp.assign(block=wp["nr"] // 1000)
    rng = np.random.default_rng(7)
    wpu = wp.drop(index=rng.choice(len(wp), size=300, replace=False)).reset_index(drop=True)
    sy = pd.read_csv(folder / "synthetic.csv")
    fis = fi.assign(big=(fi.groupby("county")["w1"].transform("mean") > 1).astype(int))
    rng2 = np.random.default_rng(11)
    syx = sy.assign(x=np.where(rng2.random(len(sy)) < 0.03, np.nan,
                               0.3 * sy["links"] + rng2.normal(size=len(sy))))
    syc = sy.assign(links=sy["links"] + 0.25 * (sy["unit"].str[1:].astype(int) % 4))
    syc = syc[syc.groupby("unit")["period"].transform("size") == 12]
    rng3 = np.random.default_rng(5)
    syna = sy.copy()
    syna.loc[rng3.random(len(sy)) < 0.05, "links"] = np.nan
    syna.loc[rng3.random(len(sy)) < 0.05, "y"] = np.nan
    rng4 = np.random.default_rng(9)
    dup = sy.sample(n=80, random_state=3)
    dup = dup.assign(y=dup["y"] + rng4.normal(size=80))
    sydup = pd.concat([sy, dup], ignore_index=True)
    sydup = sydup.assign(w=rng4.uniform(0.5, 2, len(sydup)))
    return {"favara_imbs": fi, "favara_imbs_size": fis, "wagepan": wp, "synthetic_x": syx,
            "synthetic_cont": syc, "wagepan_cluster": wpc,
            "wagepan_unbalanced": wpu, "synthetic": sy, "synthetic_na": syna,
            "synthetic_repeated": sydup}


RECIPES = {
    "favara_imbs": "favara_imbs.csv.gz as is",
    "favara_imbs_size": "favara_imbs with big = 1 if the county's mean w1 > 1 else 0",
    "wagepan": "wagepan.csv.gz as is",
    "wagepan_cluster": "wagepan with block = nr // 1000",
    "wagepan_unbalanced": "wagepan without the rows numpy.random.default_rng(7)"
                          ".choice(4360, size=300, replace=False)",
    "synthetic": "synthetic.csv (recipes.synthetic())",
    "synthetic_cont": "synthetic.csv with links + 0.25 * (unit number % 4), units observed "
                      "in all 12 periods only (see SOURCE.md: continuous on unbalanced panels)",
    "synthetic_na": "synthetic.csv with links = NaN where rng(5).random(n) < 0.05, then y = "
                    "NaN where the next rng(5).random(n) < 0.05",
    "synthetic_repeated": "synthetic.csv plus 80 repeated (unit, period) rows (sample(n=80, "
                          "random_state=3), y + rng(9).normal(size=80)), weights w = "
                          "rng(9).uniform(0.5, 2) per row",
    "synthetic_x": "synthetic.csv with x = NaN where rng(11).random(n) < 0.03, else "
                   "0.3 * links + rng(11).normal(size=n) (same generator, in that order)",
}


