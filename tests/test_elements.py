"""The element table: the paper's 27 metals, their melting points and d-block positions."""

import pytest

from sweep.elements import ELEMENTS, SYMBOLS, TEMPERATURE_FACTORS, get_element, parse_element_list

PAPER_TMELT = {"Ag": 1235, "Au": 1337, "Cd": 594, "Co": 1768, "Cr": 2180, "Cu": 1358, "Fe": 1811, "Hf": 2506,
               "Hg": 234, "Ir": 2739, "Mn": 1519, "Mo": 2896, "Nb": 2750, "Ni": 1728, "Os": 3306, "Pd": 1828,
               "Pt": 2041, "Re": 3459, "Rh": 2237, "Ru": 2607, "Ta": 3290, "Tc": 2430, "Ti": 1941, "V": 2183,
               "W": 3695, "Zn": 693, "Zr": 2128}


def test_twenty_seven_metals_with_the_papers_melting_points():
    assert len(SYMBOLS) == 27
    assert {s: e.t_melt for s, e in ELEMENTS.items()} == PAPER_TMELT


def test_d_block_cells_are_unique_and_complete():
    cells = {(e.period, e.group) for e in ELEMENTS.values()}
    assert cells == {(p, g) for p in (4, 5, 6) for g in range(4, 13)}


def test_temperatures_scale_tmelt():
    assert TEMPERATURE_FACTORS == {"cold": 0.25, "warm": 0.75, "melt": 1.25}
    assert get_element("Cu").temperature("melt") == pytest.approx(1.25 * 1358)
    with pytest.raises(ValueError, match="unknown temperature"):
        get_element("Cu").temperature("hot")


def test_structures_match_the_ground_states():
    assert get_element("Mn").structure == "alpha-Mn" and get_element("Hg").structure == "alpha-Hg"
    assert {s for s, e in ELEMENTS.items() if e.structure == "hcp"} == {"Ti", "Co", "Zn", "Zr", "Tc", "Ru", "Cd",
                                                                         "Hf", "Re", "Os"}
    assert all(e.c is not None for e in ELEMENTS.values() if e.structure == "hcp")


def test_element_list_parsing():
    assert parse_element_list("Ti,Au , Cu") == ["Ti", "Cu", "Au"]
    assert parse_element_list("all") == list(SYMBOLS)
    with pytest.raises(KeyError, match="'Al' is not a TM23 metal"):
        parse_element_list("Al")
