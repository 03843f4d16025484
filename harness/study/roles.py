"""One rule for a factor's role, used by the planner (study.design) and every statistic that reads a runs table.

Roles decide what a factor is tested for: a treatment gets mean and spread tests, a seed source is a variance
(never a mean effect), a fold is the cross-validation axis. A `role.<factor>` column (or MLflow tag) states the
role; without one it follows from the name: `seeds.*` → seed_source, `evaluation.fold` → fold, else treatment.
Four places used to repeat the name rule and two of them ignored the stated role.
"""

from __future__ import annotations

ROLES: tuple[str, ...] = ("treatment", "seed_source", "fold")
SEED_PREFIX = "seeds."
FOLD = "evaluation.fold"


def factor_role(key: str, given: str = "") -> str:
    """The role of factor `key`: `given` when it is one of ROLES, else the name rule."""
    given = given.strip()
    if given in ROLES:
        return given
    if str(key).startswith(SEED_PREFIX):
        return "seed_source"
    return "fold" if key == FOLD else "treatment"
