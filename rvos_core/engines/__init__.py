"""RVOS engines behind one protocol (:class:`rvos_core.engines.base.Engine`).

Use :func:`rvos_core.engines.base.load_engine` to build one by name; nothing is loaded at import.
"""
