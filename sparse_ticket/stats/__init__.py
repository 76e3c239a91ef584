"""Statistics across runs: IQM with stratified-bootstrap CIs, learning curves, area ratios.

Pure functions of plain numpy arrays (no torch, no MLflow), the API the evaluation calls:
:mod:`.scores` (IQM and probability of improvement with CIs), :mod:`.curves` (curve alignment,
areas), :mod:`.area_ratios` (the transfer area ratio with its CI); :mod:`.checks` their shared
input checks, :mod:`.bootstrap` rliable's stratified bootstrap, vectorised. Per-run metrics of an
agent (plasticity) are in :mod:`sparse_ticket.metrics`.
"""
