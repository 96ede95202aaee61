"""Dataset readers/writers. Import the submodule you need (nothing heavy is imported here):

- :mod:`rvos_core.formats.mevis` — MeViS splits (``JPEGImages/``, ``meta_expressions.json``,
  ``mask_dict.json`` with RLE per anno_id), folder or zip; prediction PNG writer.
- :mod:`rvos_core.formats.predictions` — predicted masks in the MeViS / Ref-YouTube-VOS submission
  layout ``<video>/<exp_id>/<frame>.png`` (folder or zip).
- :mod:`rvos_core.formats.ytvos` — Ref-YouTube-VOS splits (``JPEGImages/``, palette-PNG
  ``Annotations/``, ``meta_expressions.json`` with ``obj_id`` as a string or, for multi-object
  MeViS-style expressions, a list; optional ``meta.json``), folder or zip.
- :mod:`rvos_core.formats.davis` — DAVIS annotation folders: palette PNGs of object ids (DAVIS 2017)
  and 0/255 masks (DAVIS 2016) ⇄ ``(T, H, W)`` uint8 ids or per-object bool masks.
- :mod:`rvos_core.formats.convert` — MeViS ⇄ Ref-YouTube-VOS conversion (the layout SOC / SOC++,
  seed 002, trains on), lossless for masks and expressions.

Every reader raises a module-specific ``ValueError`` subclass naming the file, field and value.
"""
