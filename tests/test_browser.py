"""The governance app in a real browser: `parkml app` (streamlit run) on loopback, opened in Debian's headless Chromium
driven by Playwright; signs in, shows the overview and a version page, saves screenshots, checks the page text."""
import os
from pathlib import Path
import pytest
from park_fixture import make_park
from app_server import running_app, signed_in_page, needs_chromium

pytestmark = needs_chromium

@pytest.fixture
def served(trained, tmp_path, monkeypatch):
    park = make_park(trained, tmp_path, monkeypatch)
    with running_app(tmp_path/'streamlit.log') as base:
        yield park, base, Path(os.environ['PARKML_RUNS'])/'screenshots'

def check_page(page, shots: Path, name: str):
    page.wait_for_timeout(500)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000)
    page.screenshot(path=str(shots/f"{name}.png"), full_page=True)
    text = page.inner_text('body')
    assert 'Traceback' not in text and page.locator('[data-testid="stException"]').count() == 0, text[:2000]
    return text

def test_browser_sign_in_overview_and_version_page(served):
    from playwright.sync_api import sync_playwright, expect
    park, base, shots = served
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser, page = signed_in_page(pw, base, 'olu', park['users']['olu'][1])
        # .first: while Streamlit reruns a page it can show the old and the new copy of an element for a moment
        expect(page.get_by_text('Versions in play').first).to_be_visible(timeout=60_000)
        expect(page.get_by_role('button', name='Sign in')).to_have_count(0, timeout=60_000)   # the form is gone
        expect(page.get_by_text('answered frames').first).to_be_visible(timeout=60_000)
        text = check_page(page, shots, '1-overview')
        flat = ' '.join(text.split())
        assert 'Signed in as olu (owner)' in flat and 'answered frames 60' in flat and 'Open alerts' in flat, flat[:1500]
        page.get_by_role('link', name='Models').click()
        expect(page.get_by_text('Staging report').first).to_be_visible(timeout=60_000)
        page.locator('[data-testid="stSelectbox"]').filter(has_text='Version').first.click()
        page.get_by_role('option', name='1', exact=True).click()
        expect(page.get_by_text('Version 1 (champion)').first).to_be_visible(timeout=60_000)
        text = check_page(page, shots, '2-version-1')
        assert 'staging passed' in text and 'Training run plots' in text
        browser.close()
    assert (shots/'1-overview.png').stat().st_size > 10_000 and (shots/'2-version-1.png').stat().st_size > 10_000
