"""Driving the MLflow 3.17 UI's experiment page in headless Chromium (selenium), as a user clicks it.

What the test reads comes from the page, never from the UI's own state: the runs table's
cells (ag-grid, one ``.ag-row`` per run with a ``col-id`` per cell), and the parallel-coordinates
chart's axes (d3: one ``g.dimension`` per axis, its lines drawn on a canvas).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Debian's chromium, headless, kept off the (closed) network: see shared/notes/dependencies.md
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_S = 60.0

COLUMN_SELECTOR = "[data-component-id='mlflow.experiment_page.runs_table.column_selector']"
CHART_CARDS = "[data-testid=draggable-chart-cards-grid] > *"
OPTION = ".du-bois-light-select-item-option"

_ROWS_JS = """
const rows = {};
document.querySelectorAll('.ag-row[row-index]').forEach(r => {
  const i = r.getAttribute('row-index'); rows[i] = rows[i] || {};
  r.querySelectorAll('.ag-cell[col-id]').forEach(c => { rows[i][c.getAttribute('col-id')] = c.innerText; });
});
return Object.values(rows);
"""
_FIND_CARD_JS = """
const cards = Array.from(document.querySelectorAll(arguments[0]));
const hit = cards.find(e => e.innerText.startsWith(arguments[1]));
if (hit) { hit.scrollIntoView({block: 'center'}); return hit; }
if (cards.length) cards[cards.length - 1].scrollIntoView({block: 'start'});  // cards render when in view
return null;
"""
_AXES_JS = """
return Array.from(arguments[0].querySelectorAll('g.dimension')).map(g => [
  (g.querySelector('.label') || {}).textContent,
  Array.from(g.querySelectorAll('.tick text')).map(t => t.textContent)]);
"""
_INKED_PIXELS_JS = """
const c = arguments[0].querySelector('canvas.foreground');
if (!c) return -1;
const a = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let n = 0; for (let i = 3; i < a.length; i += 4) if (a[i]) n++;
return n;
"""


def browser_missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            return f"{path} is not installed (make installs chromium and chromium-driver from setup/system-packages.toml)"
    return None


def start_browser(profile: Path, log: Path, width: int = 1600, height: int = 1000):
    """Headless Chromium with a fresh profile, driven through Debian's chromedriver (nothing downloaded)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER), log_output=str(log)), options=options)


def wait_for(driver, condition: Callable[[Any], Any], what: str, timeout: float = WAIT_S):
    """``condition(driver)`` once truthy; a timeout names ``what`` and the page's text."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.25).until(condition)
    except TimeoutException:
        text = driver.execute_script("return document.body ? document.body.innerText : ''")[:1500]
        raise AssertionError(f"timed out waiting for {what}; page at {driver.current_url}:\n{text}") from None


def buttons(driver, text: str, root=None) -> list:
    """The displayed buttons whose text is ``text``."""
    from selenium.webdriver.common.by import By

    return [b for b in (root or driver).find_elements(By.TAG_NAME, "button")
            if b.is_displayed() and b.text.strip() == text]


def runs_table(driver) -> list[dict[str, str]]:
    """The runs table's rows as ``{col-id: cell text}`` (pinned and scrolled parts of a row joined)."""
    return driver.execute_script(_ROWS_JS)


def header_ids(driver) -> list[str]:
    """The col-ids of the runs table's column headers."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('.ag-header-cell[col-id]')).map(e => e.getAttribute('col-id'))")


def close_assistant(driver) -> None:
    """Close the assistant panel that the UI opens on a first visit (it hides half the table)."""
    from selenium.webdriver.common.by import By

    for button in driver.find_elements(By.CSS_SELECTOR, "button[aria-label='Close']"):
        if button.is_displayed():
            button.click()


def choose_columns(driver, toggles: list[str]) -> None:
    """Tick or untick each named column in the table's "Columns" selector (searching it by name)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    buttons(driver, "Columns")[0].click()
    dialog = wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, COLUMN_SELECTOR), "the column selector")
    search = dialog.find_element(By.CSS_SELECTOR, "input[placeholder='Search columns']")
    for name in toggles:
        search.send_keys(Keys.CONTROL, "a")
        search.send_keys(Keys.BACKSPACE)
        search.send_keys(name)

        def node(d, name=name):
            for candidate in dialog.find_elements(By.CSS_SELECTOR, ".du-bois-light-tree-treenode"):
                titles = candidate.find_elements(By.CSS_SELECTOR, ".du-bois-light-tree-title")
                if titles and titles[0].text == name:
                    return candidate
            return None

        wait_for(driver, node, f"column {name!r} in the column selector").find_element(
            By.CSS_SELECTOR, ".du-bois-light-tree-checkbox").click()
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)


def autosize_columns(driver, prefix: str) -> None:
    """Widen each table column whose col-id starts with ``prefix`` to its content (a double click on
    the header's resize handle), so that screenshots show whole numbers and names."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    for header in driver.find_elements(By.CSS_SELECTOR, f".ag-header-cell[col-id^='{prefix}']"):
        for handle in header.find_elements(By.CSS_SELECTOR, ".ag-header-cell-resize"):
            ActionChains(driver).double_click(handle).perform()


def columns_fit(driver, prefix: str) -> bool:
    """Whether every header and cell of the columns whose col-id starts with ``prefix`` shows its whole text."""
    return driver.execute_script("""
        const cells = document.querySelectorAll(`.ag-header-cell[col-id^="${arguments[0]}"] .ag-header-cell-text,
                                                 .ag-cell[col-id^="${arguments[0]}"]`);
        return cells.length > 0 && Array.from(cells).every(c => c.scrollWidth <= c.clientWidth + 1);""", prefix)


def show_charts(driver) -> None:
    """Switch the runs view from the table to the charts."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, "input[name=runs-view-mode][value=CHART]").find_element(
        By.XPATH, "./ancestor::label").click()
    wait_for(driver, lambda d: buttons(d, "Add chart"), "the charts view")


def add_parallel_coordinates(driver, params: list[str], metrics: list[str]) -> None:
    """Add a parallel-coordinates chart of ``params`` against ``metrics`` to the last chart section (system
    metrics: empty in a CPU sweep, so the new card is not below every metric's line chart)."""
    from selenium.webdriver.common.by import By

    buttons(driver, "Add chart")[-1].click()
    wait_for(driver, lambda d: [e for e in d.find_elements(By.CSS_SELECTOR, "[role=menuitem]")
                                if e.text == "Parallel coordinates"], "the chart type menu")[0].click()
    dialog = wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "[role=dialog]"), "the chart dialog")[-1]
    selects = dialog.find_elements(By.CSS_SELECTOR, ".du-bois-light-select")
    for select, keys in zip(selects, (params, metrics)):
        for key in keys:
            select.find_element(By.CSS_SELECTOR, ".du-bois-light-select-selector").click()
            select.find_element(By.CSS_SELECTOR, "input[role=combobox]").send_keys(key)
            wait_for(driver, lambda d, key=key: [o for o in d.find_elements(By.CSS_SELECTOR, OPTION)
                                                 if o.get_attribute("title") == key and o.is_displayed()],
                     f"option {key!r}")[0].click()
        dialog.find_element(By.TAG_NAME, "h4").click()  # closes the drop-down, not the dialog
    wait_for(driver, lambda d: len(dialog.find_elements(By.CSS_SELECTOR, "g.dimension")) == len(params) + len(metrics),
             "the chart preview")
    buttons(driver, "Add chart", dialog)[0].click()
    wait_for(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, "[role=dialog]"), "the dialog to close")


def open_chart_fullscreen(driver, title: str):
    """Scroll to the chart card titled ``title``, open it full screen; returns the full-screen dialog."""
    from selenium.webdriver.common.by import By

    card = wait_for(driver, lambda d: d.execute_script(_FIND_CARD_JS, CHART_CARDS, title), f"the chart {title!r}")
    time.sleep(0.5)  # let the scroll settle before the click
    card.find_element(By.CSS_SELECTOR, "button[data-component-id=fullscreen_button_chartcard]").click()
    return wait_for(driver, lambda d: [e for e in d.find_elements(By.CSS_SELECTOR, "[role=dialog]")
                                       if e.find_elements(By.CSS_SELECTOR, "g.dimension")], "the full-screen chart")[0]


def chart_axes(driver, root) -> list[tuple[str, list[str]]]:
    """A parallel-coordinates chart's axes: (label, tick labels), left to right."""
    return [tuple(axis) for axis in driver.execute_script(_AXES_JS, root)]


def inked_pixels(driver, root) -> int:
    """How many pixels the chart's lines cover on its canvas (-1: no canvas)."""
    return driver.execute_script(_INKED_PIXELS_JS, root)


def save_screenshot(driver, path: Path) -> Path:
    """The page as a PNG at ``path``, written whole (a temporary file renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(driver.get_screenshot_as_png())
    os.replace(tmp, path)
    return path
