"""Which rows answer which question: the design's roles, one-at-a-time base runs, and seed blocks.

- One-at-a-time designs (`design` column = one_at_a_time) move one factor at a time from a base point.
  A factor's levels are compared on the base runs plus the runs that move that factor only; runs that
  moved another factor are not the base level of this one. A factor's base level is its level in the runs
  marked `base_point` (the base config itself), else its most frequent level (the base point appears once for
  every other factor's moved levels; a lone factor has no most frequent level). Each moved level is compared
  with the base, not with the other moves: the family the design asks about, and the one its Holm and
  sequential boundaries are sized for.
- Seed blocks (`seed_block` column): runs sharing a label drew the same seed for every source. When every
  block holds every level of a treatment factor, the comparison is paired (replicate as block).
"""

from __future__ import annotations

from itertools import combinations

import pandas as pd

from harness.analysis.runs_table import design_kind, distinct_runs, factor_columns, finished_runs

MIN_BLOCKS = 3


def labels(fin: pd.DataFrame, factor: str) -> pd.Series:
    return fin[factor].map(lambda v: "" if pd.isna(v) else str(v))


def base_levels(fin: pd.DataFrame, factors: list[str]) -> dict[str, str]:
    """Most frequent level of each factor among the given rows (ties: first seen)."""
    return {f: str(labels(fin, f).value_counts(sort=True).index[0]) for f in factors if len(fin)}


def rows_for(df: pd.DataFrame, factor: str, rows: pd.DataFrame | None = None) -> pd.DataFrame:
    """Distinct finished runs that compare the levels of `factor` (one-at-a-time: base runs + its own moves)."""
    fin = distinct_runs(df) if rows is None else rows
    if design_kind(df) != "one_at_a_time" or factor not in fin.columns:
        return fin
    others = [f for f in factor_columns(df) if f != factor and f in fin.columns]
    base = base_levels(fin, others)
    keep = pd.Series(True, index=fin.index)
    for f in others:
        keep &= labels(fin, f) == base[f]
    return fin.loc[keep]


def base_level(df: pd.DataFrame, factor: str) -> str | None:
    """The level of `factor` at a one-at-a-time study's base point; None for other designs or when the table
    cannot tell (a lone factor logged before runs carried `base_point`)."""
    fin = finished_runs(df)
    if design_kind(df) != "one_at_a_time" or factor not in fin.columns or fin.empty:
        return None
    if "base_point" in fin.columns:
        marked = fin[fin["base_point"].map(lambda v: str(v).strip().lower() == "true")]
        if len(marked):
            return base_levels(marked, [factor])[factor]
    if len([f for f in factor_columns(fin) if f != factor and labels(fin, f).nunique() > 1]) == 0:
        return None
    return base_levels(fin, [factor])[factor]


def compared_pairs(df: pd.DataFrame, factor: str, levels: list[str]) -> list[tuple[str, str]]:
    """The pairs of `levels` a study compares: each against the base in a one-at-a-time design whose base
    level is known (in the order of `levels`), every pair otherwise."""
    base = base_level(df, factor)
    pairs = list(combinations(levels, 2))
    return [p for p in pairs if base in p] if base in levels else pairs


def block_cells(rows: pd.DataFrame, factor: str) -> pd.DataFrame | None:
    """Mean accuracy per (seed block, level) over complete blocks, or None when the design is not paired.

    Paired means: a `seed_block` column, and >= MIN_BLOCKS blocks that each hold every level of `factor`
    (blocks missing a level, e.g. by a failed run, are left out whole).
    """
    if "seed_block" not in rows.columns or factor not in rows.columns:
        return None
    d = pd.DataFrame({"block": rows["seed_block"].astype(str), "level": labels(rows, factor),
                      "y": rows["accuracy"].astype(float)})
    d = d[d["block"] != ""]
    n_levels = d["level"].nunique()
    if n_levels < 2:
        return None
    cells = d.groupby(["block", "level"], sort=False)["y"].mean().reset_index()
    complete = cells.groupby("block")["level"].transform("nunique") == n_levels
    cells = cells[complete]
    if cells["block"].nunique() < MIN_BLOCKS:
        return None
    return cells
