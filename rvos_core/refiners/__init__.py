"""Promptable segmenters (refiners) behind one protocol (:class:`rvos_core.refiners.base.Refiner`).

Use :func:`rvos_core.refiners.registry.load_refiner` to build one; nothing is loaded at import.
"""
