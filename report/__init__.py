"""The report generator: results/ + spec files -> report/index.md, report/<id>.md, figures.

Reads files only (spec TOML and result JSON); it imports neither :mod:`seg_core` nor
:mod:`ablations`, so a report can be rebuilt anywhere pandas and matplotlib are installed.
``python -m report`` regenerates everything.
"""
