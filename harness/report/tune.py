"""tune.md: the search's verdict, the fresh-seed re-evaluation table and the configurations, as Markdown."""

from __future__ import annotations

import json
from typing import Any


def render(result: dict[str, Any]) -> str:
    pruning = result["pruning"]
    lines = [f"# tune: {result['study']}", "", "## Verdict", "", *[f"- {line}" for line in result["verdict"]],
             f"- Pruning: {pruning['pruned']}/{pruning['trials']} trials pruned; {pruning['epochs_trained']} epochs "
             f"trained instead of {pruning['epochs_without_pruning']} for the same trials without pruning.", "",
             "## Re-evaluation with fresh seeds", "",
             "| candidate | search % | n | re-run mean % | 95% CI % | winner's curse pp |", "|---|---|---|---|---|---|"]
    for row in result["candidates"]:
        ci = "n/a" if row["ci"] is None else f"{100 * row['ci'][0]:.2f}–{100 * row['ci'][1]:.2f}"
        mean = "n/a" if row["mean"] is None else f"{100 * row['mean']:.2f}"
        curse = "n/a" if row["winners_curse"] is None else f"{100 * row['winners_curse']:+.2f}"
        lines.append(f"| {row['candidate']} | {100 * row['search_accuracy']:.2f} | {row['n']} | {mean} | {ci} | "
                     f"{curse} |")
    lines += ["", "## Configurations", ""]
    lines += [f"- {t['label']}: `{json.dumps(t['overrides'])}`" for t in result["top"]]
    lines += ["", f"Re-evaluation runs: MLflow experiment `{result['reeval_study']}` "
              f"(`python -m harness report {result['reeval_study']}` for the full statistics)."]
    return "\n".join(lines) + "\n"
