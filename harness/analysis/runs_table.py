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
)
IGNORED_PREFIXES: tuple[str, ...] = ("metric.", "param.", "role.")
ROLE_PREFIX = "role."
ROLES: tuple[str, ...] = ("treatment", "seed_source", "fold")
DESIGNS: tuple[str, ...] = ("factorial", "one_at_a_time", "listed")
FINISHED = "FINISHED"
ALLOWED_STATUS: tuple[str, ...] = ("FINISHED", "FAILED", "KILLED", "RUNNING", "SCHEDULED")
_FLOAT_COLUMNS = ("accuracy", "loss", "wall_time_s")
_TEXT_COLUMNS = (
    "environment",
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
    """Finished runs with bit-identical copies dropped: one row per (config_key, weights_hash).

    Runs of one configuration (same config_key and factor levels) that ended with the same non-empty
    weights hash are one training, not independent observations. `attrs["copies_dropped"]` counts the
    rows left out.
    """
    fin = finished_runs(df)
    if "weights_hash" not in fin.columns or fin.empty:
        fin.attrs["copies_dropped"] = 0
        return fin
    hashes = fin["weights_hash"].map(_label)
    keys = (["config_key"] if "config_key" in fin.columns else []) + factor_columns(fin)
    ident = pd.concat([fin[k].map(_label) for k in keys] + [hashes], axis=1)
    copy = ident.duplicated(keep="first") & (hashes != "")
    out = fin.loc[~copy].copy()
    out.attrs["copies_dropped"] = int(copy.sum())
    return out


def design_kind(df: pd.DataFrame) -> str:
    """The study's design from the optional `design` column (first non-empty value); factorial when absent."""
    if "design" not in df.columns:
        return "factorial"
    values = [v for v in df["design"].map(_label).str.strip() if v]
    return values[0] if values and values[0] in DESIGNS else "factorial"


def factor_roles(df: pd.DataFrame) -> dict[str, str]:
    """Each factor's role: from its `role.<factor>` column when given, else from its name.

    `seeds.*` → seed_source, `evaluation.fold` → fold, anything else → treatment.
    """
    roles = {}
    for f in factor_columns(df):
        given = ""
        if f"{ROLE_PREFIX}{f}" in df.columns:
            values = [v for v in df[f"{ROLE_PREFIX}{f}"].map(_label).str.strip() if v]
            given = values[0] if values and values[0] in ROLES else ""
        if not given:
            given = "seed_source" if str(f).startswith("seeds.") else "fold" if f == "evaluation.fold" else "treatment"
        roles[f] = given
    return roles


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
