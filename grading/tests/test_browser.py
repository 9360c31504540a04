"""The HTML leaderboard in a real headless browser (Debian's chromium, driven by Selenium through chromedriver):
every row renders, learner names are text (never markup), and clicking a column header sorts by it."""

from __future__ import annotations

import shutil

import pytest

from llmfs.course import Course
from llmfs.leaderboard import write_all

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
HOSTILE = "<script>document.title='pwned'</script><b>bold</b>"


def _records(course: Course) -> list[dict]:
    """A class of 12 with ties, a hostile name, a learner without a figure and a failed submission."""
    names = [f"learner{i:02d}" for i in range(10)] + [HOSTILE, "zz-crashed"]
    records = []
    for i, name in enumerate(names):
        score = [100, 40, 55, 100, 0, 75, 40, 90, 10, 65, 30, 0][i]
        metrics = [] if i in (4, 11) else [{"name": "bigram val loss", "value": 2.4 + 0.13 * ((i * 7) % 10),
                                            "order": "asc"}]
        records.append({"name": name, "error": "corrupt zip" if name == "zz-crashed" else "", "seconds": 3.0,
                        "graded_at": "2026-11-21T00:00:00+00:00",
                        "milestones": {"01": {"score": score, "max_score": 100,
                                              "status": "complete" if score == 100 else "partial",
                                              "metrics": metrics}}})
    return records


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM and CHROMEDRIVER, ("the browser test needs Debian's chromium and chromium-driver: "
                                       "run `bash .ci/browser` (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(course: Course, browser, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("leaderboard")
    records = _records(course)
    write_all(course, records, out, gradebook=False)
    browser.get((out / "leaderboard.html").as_uri())
    return browser, records, out


def _column(driver, header: str) -> list[str]:
    from selenium.webdriver.common.by import By

    headers = [th.text.replace(" ▲", "").replace(" ▼", "") for th in driver.find_elements(By.CSS_SELECTOR, "th")]
    index = next(i for i, h in enumerate(headers) if h.startswith(header))
    return [row.find_elements(By.TAG_NAME, "td")[index].text
            for row in driver.find_elements(By.CSS_SELECTOR, "#leaderboard tbody tr")]


def _click(driver, header: str) -> None:
    from selenium.webdriver.common.by import By

    next(th for th in driver.find_elements(By.CSS_SELECTOR, "th") if th.text.startswith(header)).click()


def test_every_row_renders_and_names_are_text(page) -> None:
    driver, records, out = page
    learners = _column(driver, "Learner")
    assert sorted(learners) == sorted(r["name"] for r in records)
    assert driver.title.endswith("leaderboard"), "a learner's name ran as a script"
    assert HOSTILE in learners
    driver.save_screenshot(str(out / "leaderboard.png"))


def test_the_page_opens_ranked_by_total(page) -> None:
    driver, records, _ = page
    totals = [float(t.split("/")[0]) for t in _column(driver, "Total")]
    assert totals == sorted(totals, reverse=True)
    ranks = [int(r) for r in _column(driver, "Rank")]
    assert ranks[:2] == [1, 1] and ranks[2] == 3, "equal totals must share a rank"


def test_clicking_a_header_sorts_by_it_both_ways(page) -> None:
    driver, records, _ = page
    _click(driver, "Learner")
    names = _column(driver, "Learner")
    assert names == sorted(names, key=str.lower)
    _click(driver, "Learner")
    assert _column(driver, "Learner") == sorted(names, key=str.lower, reverse=True)
    _click(driver, "01 bigram val loss")
    losses = _column(driver, "01 bigram val loss")
    numbers = [float(x) for x in losses if x]
    assert numbers == sorted(numbers) and losses[-2:] == ["", ""], "numeric sort, blanks last"
    _click(driver, "Total")
    totals = [float(t.split("/")[0]) for t in _column(driver, "Total")]
    assert totals == sorted(totals)
