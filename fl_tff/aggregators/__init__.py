"""Aggregators of client updates: the chain built from the layers the selected options declare
(`chain`), the `--aggregator` registry with the coordinate-wise rules (`registry`), and the
Byzantine-robust rules that see every update (`robust/`).

Submodules are imported where used (nothing here), so that the chain stays on the ground floor.
"""
