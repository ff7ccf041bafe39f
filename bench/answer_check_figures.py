"""Print the answer check's precision/recall on tests/data/answer_check_labelled.jsonl (for the README).

    .venv/bin/python bench/answer_check_figures.py            # table
    .venv/bin/python bench/answer_check_figures.py --json     # JSON
    .venv/bin/python bench/answer_check_figures.py --mistakes # also list every disagreement with the labels

Labels: true = the response's final answer agrees with FLAN's target, false = it disagrees, null = a human
can't tell either (no answer given, target not a short answer). "dev" rows were written first and the rules
tuned on them; "heldout" rows were written afterwards and measured before any further change.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tracegen.cleaning.answer_check import evaluate

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "answer_check_labelled.jsonl"


def figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Summary for all rows, per split and per family."""
    out: dict[str, Any] = {"all": evaluate(rows).summary()}
    for key in ("split", "family"):
        for value in sorted({str(r.get(key)) for r in rows}):
            out[f"{key}={value}"] = evaluate([r for r in rows if str(r.get(key)) == value]).summary()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--mistakes", action="store_true")
    args = parser.parse_args()
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    data = figures(rows)
    if args.json:
        print(json.dumps(data, indent=2))
        return
    print(f"{'subset':<24}{'n':>5}{'P(agree)':>10}{'R(agree)':>10}{'P(disagree)':>13}{'R(disagree)':>13}")
    for name, s in data.items():
        t, f = s["agrees_true"], s["agrees_false"]
        print(
            f"{name:<24}{s['examples']:>5}{t['precision']:>10.3f}{t['recall']:>10.3f}"
            f"{f['precision']:>13.3f}{f['recall']:>13.3f}"
        )
    if args.mistakes:
        for m in evaluate(rows).mistakes:
            head = f"- [{m['family']}] label={m['label']} predicted={m['predicted']} ({m['rule']})"
            print(f"{head}: {m['response']!r}")


if __name__ == "__main__":
    main()
