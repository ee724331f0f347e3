"""Orchestration: one stage end to end — train → sweep → select → promote → card — and the
standalone evaluator. This layer sits above `stages/` (recipes), `eval/` (scoring, selection,
merges) and `data_builders/`, and composes them; `slm/` below it is the ground floor they share.
Only `launch/` imports it.
"""
