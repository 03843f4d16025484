"""The runs table: one row per training run, the contract between the runner and the report.

The runner writes it (CSV or an in-memory DataFrame); the statistics and the report read it.
Reserved columns have fixed meanings (see docs/runs-table.md); every other column is a factor
whose values are labels. Validation happens here, once, so the statistics can trust the table.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from harness.errors import HarnessError
from harness.study.roles import ROLES, factor_role

RESERVED_COLUMNS: tuple[str, ...] = (
    "run_key",
    "config_key",
    "status",
    "failure_reason",
    "accuracy",
    "loss",
    "weights_hash",
    "wall_time_s",
    "replicate",
    "predictions",
    "run_id",
    "run_name",
    "design",
    "seed_block",
    "environment",
    "stopped",  # how each stage ended where one may stop on a plateau (`name: plateau at 37/300 · ...`)
    "resumed",  # `after epoch N` for a training that picked up from its checkpoint after a crash
    "base_point",  # true for a one-at-a-time study's base config: each moved level is compared with it
)
IGNORED_PREFIXES: tuple[str, ...] = ("metric.", "param.", "role.")
ROLE_PREFIX = "role."
DESIGNS: tuple[str, ...] = ("factorial", "one_at_a_time", "listed")
FINISHED = "FINISHED"
ALLOWED_STATUS: tuple[str, ...] = ("FINISHED", "FAILED", "KILLED", "RUNNING", "SCHEDULED")
_FLOAT_COLUMNS = ("accuracy", "loss", "wall_time_s")
_TEXT_COLUMNS = (
    "environment", "stopped", "resumed", "base_point",
    "run_key", "config_key", "failure_reason", "weights_hash", "predictions", "run_id", "run_name", "seed_block",
)


def factor_columns(df: pd.DataFrame) -> list[str]:
    """Columns that are factors: everything not reserved and not a `metric.`/`param.` column."""
    return [
        c
        for c in df.columns
        if c not in RESERVED_COLUMNS and not str(c).startswith(IGNORED_PREFIXES)
    ]


def finished_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Only the rows that enter the statistics: status FINISHED (or absent) with accuracy in [0, 1].

    Tolerates an unvalidated table (the runner may pass its DataFrame directly).
    """
    acc = pd.to_numeric(df["accuracy"], errors="coerce")
    ok = acc.notna() & (acc >= 0) & (acc <= 1)
    if "status" in df.columns:
        ok &= df["status"].map(lambda v: _label(v).strip().upper() in ("", FINISHED))
    out = df.loc[ok].copy()
    out["accuracy"] = acc[ok].astype(float)
    return out


def distinct_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Finished runs with bit-identical copies dropped: one row per (weights_hash, levels of the non-seed factors).

    Identical weights are one training whatever the keys say: `config_key` hashes every seed, so a fresh seed
    the training never uses (the augmentation seed with augmentation off) gives new keys to the same model.
    Seed-value columns (`seeds.init` = 0, 1, …) are left out of the identity for the same reason; treatment,
    fold and seed-set levels stay in it (one model reached at two levels of a treatment is data for both).
    `attrs["copies_dropped"]` counts the rows left out. Without hashes nothing can be told apart here.
    """
    fin = finished_runs(df)
    if "weights_hash" not in fin.columns or fin.empty:
        fin.attrs["copies_dropped"] = 0
        return fin
    hashes = fin["weights_hash"].map(_label)
    roles = factor_roles(fin)
    keys = [f for f in factor_columns(fin) if not seed_value_factor(fin, f, roles)]
    ident = pd.concat([fin[k].map(_label) for k in keys] + [hashes], axis=1)
    copy = ident.duplicated(keep="first") & (hashes != "")
    out = fin.loc[~copy].copy()
    out.attrs["copies_dropped"] = int(copy.sum())
    return out


def copies_unknown(df: pd.DataFrame) -> bool:
    """True when some finished run has no weights_hash: equal accuracies may then be copies of one training."""
    fin = finished_runs(df)
    return "weights_hash" not in fin.columns or any(_label(v).strip() == "" for v in fin["weights_hash"])


def design_kind(df: pd.DataFrame) -> str:
    """The study's design: the `design` column (first non-empty value), else inferred_design."""
    values = [v for v in df["design"].map(_label).str.strip() if v] if "design" in df.columns else []
    if values and values[0] in DESIGNS:
        return values[0]
    return inferred_design(df)


def inferred_design(df: pd.DataFrame) -> str:
    """one_at_a_time when >= 2 treatments vary and every finished run is the base point (each treatment at its
    most frequent level) or moves exactly one treatment from it; else factorial.

    Another team's table of a base plus single changes, analysed as a factorial, compared A's base level pooled
    over B's moves (false claims in 28.5% of null studies, issue 28 item 4).
    """
    fin = finished_runs(df)
    roles = factor_roles(df)
    lab = pd.DataFrame({f: fin[f].map(_label) for f in factor_columns(df) if roles[f] == "treatment"})
    lab = lab.loc[:, lab.nunique() > 1]
    if lab.shape[1] < 2:
        return "factorial"
    base = {f: lab[f].value_counts(sort=True).index[0] for f in lab.columns}
    moved = (lab != pd.Series(base)).sum(axis=1)
    return "one_at_a_time" if moved.max() <= 1 and (moved == 0).any() else "factorial"


def factor_roles(df: pd.DataFrame) -> dict[str, str]:
    """Each factor's role (harness.study.roles.factor_role): its `role.<factor>` column when given, else its name."""
    roles = {}
    for f in factor_columns(df):
        given = ""
        if f"{ROLE_PREFIX}{f}" in df.columns:
            values = [v for v in df[f"{ROLE_PREFIX}{f}"].map(_label).str.strip() if v]
            given = values[0] if values else ""
        roles[f] = factor_role(f, given)
    return roles


def seed_value_factor(df: pd.DataFrame, factor: str, roles: dict[str, str] | None = None) -> bool:
    """A seed-source factor whose levels are seed values (integers: a random effect), not sets of redrawn sources."""
    role = (roles or factor_roles(df)).get(factor)
    return role == "seed_source" and not df.empty and all(_label(v).isdigit() for v in df[factor])


def _label(value: object) -> str:
    """Factor values are labels: keep text as-is, show missing as an empty string."""
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    if value is pd.NA:
        return ""
    return str(value)


def _to_float(df: pd.DataFrame, col: str, source: str) -> pd.Series:
    """Parse a numeric column, naming the first bad cell in the error."""
    out = pd.to_numeric(df[col].map(lambda v: None if _label(v).strip() == "" else v), errors="coerce")
    bad = out.isna() & df[col].map(lambda v: _label(v).strip() != "")
    if bad.any():
        i = int(bad.to_numpy().nonzero()[0][0])
        raise HarnessError(
            f"{source}: row {i + 1}, column '{col}': got {df[col].iloc[i]!r}; allowed: a number or empty"
        )
    return out.astype(float)


def validate_runs_table(df: pd.DataFrame, source: str = "runs table") -> pd.DataFrame:
    """Return a normalized copy of a runs table, or raise HarnessError naming row and column.

    Normalization: `status` defaults to FINISHED and is upper-cased; numeric reserved columns
    become floats (`replicate` a nullable integer); factor values become strings.
    """
    if "accuracy" not in df.columns:
        raise HarnessError(f"{source}: missing required column 'accuracy'; columns are {list(df.columns)}")
    out = df.copy().reset_index(drop=True)
    if "status" not in out.columns:
        out["status"] = FINISHED
    out["status"] = out["status"].map(lambda v: _label(v).strip().upper() or FINISHED)
    bad_status = ~out["status"].isin(ALLOWED_STATUS)
    if bad_status.any():
        i = int(bad_status.to_numpy().nonzero()[0][0])
        raise HarnessError(
            f"{source}: row {i + 1}, column 'status': got {out['status'].iloc[i]!r}; "
            f"allowed: {', '.join(ALLOWED_STATUS)}"
        )
    for col in _FLOAT_COLUMNS:
        if col in out.columns:
            out[col] = _to_float(out, col, source)
    acc = out["accuracy"]
    finished = out["status"] == FINISHED
    bad_acc = finished & (acc.isna() | (acc < 0) | (acc > 1))
    bad_acc |= ~finished & acc.notna() & ((acc < 0) | (acc > 1))
    if bad_acc.any():
        i = int(bad_acc.to_numpy().nonzero()[0][0])
        raise HarnessError(
            f"{source}: row {i + 1}, column 'accuracy': got {df['accuracy'].iloc[i]!r} with status "
            f"{out['status'].iloc[i]}; allowed: a number in [0, 1] (empty only when status is not FINISHED)"
        )
    if "replicate" in out.columns:
        rep = _to_float(out, "replicate", source)
        frac = rep.notna() & (rep != rep.round())
        if frac.any():
            i = int(frac.to_numpy().nonzero()[0][0])
            raise HarnessError(
                f"{source}: row {i + 1}, column 'replicate': got {rep.iloc[i]}; allowed: an integer"
            )
        out["replicate"] = rep.astype("Int64")
    for col in _TEXT_COLUMNS:
        if col in out.columns:
            out[col] = out[col].map(_label)
    if "run_key" in out.columns:
        keys = out.loc[finished, "run_key"]
        dup = keys[keys.duplicated(keep=False) & (keys != "")]
        if len(dup):
            rows = [int(i) + 1 for i in dup.index[:2]]
            raise HarnessError(
                f"{source}: rows {rows[0]} and {rows[1]}, column 'run_key': duplicate {dup.iloc[0]!r} among "
                "FINISHED runs; allowed: one FINISHED row per run_key"
            )
    for col in factor_columns(out):
        out[col] = out[col].map(_label).astype(object)
    for col in [c for c in out.columns if str(c).startswith(ROLE_PREFIX)]:
        bad = ~out[col].map(lambda v: _label(v).strip() in ("", *ROLES))
        if bad.any():
            i = int(bad.to_numpy().nonzero()[0][0])
            raise HarnessError(f"{source}: row {i + 1}, column '{col}': got {out[col].iloc[i]!r}; "
                               f"allowed: {', '.join(ROLES)} or empty")
    if "design" in out.columns:
        bad = ~out["design"].map(lambda v: _label(v).strip() in ("", *DESIGNS))
        if bad.any():
            i = int(bad.to_numpy().nonzero()[0][0])
            raise HarnessError(f"{source}: row {i + 1}, column 'design': got {out['design'].iloc[i]!r}; "
                               f"allowed: {', '.join(DESIGNS)} or empty")
    return out


def load_runs_table(path: str | Path) -> pd.DataFrame:
    """Read and validate a runs table CSV; factor values are read as text, never re-typed."""
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"{path}: runs table not found; allowed: a CSV file with one row per run")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HarnessError(f"{path}: not a readable CSV ({first}); allowed: a CSV with a header row") from exc
    return validate_runs_table(raw, source=str(path))
