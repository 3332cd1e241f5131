"""The embedded mini-TM23: MD of the 27 metals, labelled at PBE level, in the archive's layout.

``generate_archive`` writes the data set (labels by :mod:`.labellers`, SevenNet-0 by
default), ``potential_table`` lists each element's classical MD potential and its
published source (fallbacks flagged), ``calculator_for`` gives the ASE calculator of that
potential.
"""

from sweep.data.generate.archive_writer import generate_archive, generate_element, split_counts
from sweep.data.generate.md import MDSettings
from sweep.data.generate.potentials import PotentialInfo, calculator_for, potential_info, potential_table

__all__ = [
    "MDSettings",
    "PotentialInfo",
    "calculator_for",
    "generate_archive",
    "generate_element",
    "potential_info",
    "potential_table",
    "split_counts",
]
