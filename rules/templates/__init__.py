"""Shipped rule templates as data (``<name>.toml``), loaded by :func:`rules.load_templates`.

Each file names its ``source`` (standard or regulation), ``unit`` and a ``[rule]`` table of
RULES.md keys. A package (not just a folder) so that the files ship with the wheel.
"""
