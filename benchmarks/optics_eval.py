"""Accuracy of a model bundle under the line camera's optics families (issue 14's table).

    .venv/bin/python benchmarks/optics_eval.py --model models/demo --n 300 --seed 4004 \
        --perturb issue --json build/optics-eval.json

A thin entry point over `inspector.training.perturb_eval` (what `inspector eval --perturb` runs).
"""

from inspector.training.perturb_eval import main

if __name__ == "__main__":
    raise SystemExit(main())
