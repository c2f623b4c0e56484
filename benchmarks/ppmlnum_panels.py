"""Integer-key and pair-sorted variants of the gravity panels of
``benchmarks/gravity_spotcheck.py gen`` (section "PPML's numeric keys" of RESULTS.md): the
same rows, with the keys as users build numeric ids -- ``exporter`` / ``importer`` the
country number (``"C027x"`` -> 27), ``pair = exporter * 1000 + importer``,
``exp_year = exporter * 10000 + year``, ``imp_year = importer * 10000 + year`` (int64) --
and, for ``--sorted``, the rows sorted by pair and year.

    python benchmarks/ppmlnum_panels.py /tmp/mygrav/g710.parquet /tmp/ppmlnum/g710i.parquet
    python benchmarks/ppmlnum_panels.py /tmp/mygrav/g710.parquet /tmp/ppmlnum/g710is.parquet --sorted
"""

from __future__ import annotations

import sys

import pandas as pd


def main(src: str, dst: str, sort: bool) -> None:
    d = pd.read_parquet(src)
    ex = d["exporter"].str.slice(1, 4).astype("int64").to_numpy()
    im = d["importer"].str.slice(1, 4).astype("int64").to_numpy()
    yr = d["year"].to_numpy().astype("int64")
    out = pd.DataFrame({"exporter": ex, "importer": im, "year": yr,
                        "trade": d["trade"].to_numpy(), "rta": d["rta"].to_numpy(),
                        "pair": ex * 1000 + im, "exp_year": ex * 10000 + yr,
                        "imp_year": im * 10000 + yr})
    if sort:
        out = out.sort_values(["pair", "year"], kind="stable").reset_index(drop=True)
    out.to_parquet(dst)
    print(dst, len(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], "--sorted" in sys.argv[3:])
