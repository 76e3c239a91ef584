"""Statistics across runs: IQM with stratified-bootstrap CIs, learning curves, area ratios.

Pure functions of plain numpy arrays (no torch, no MLflow): :mod:`.aggregate` is the API the
evaluation calls, :mod:`.bootstrap` rliable's stratified bootstrap, vectorised. Per-run metrics
of an agent (plasticity) are in :mod:`sparse_ticket.metrics`.
"""
