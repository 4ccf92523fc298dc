"""The ablation driver: spec files -> sweeps of runs -> one result JSON per run.

Depends on :mod:`seg_core`; nothing in :mod:`seg_core` or :mod:`report` imports it.
"""
