"""The governance app as the browser tests meet it: a real `parkml app` (Streamlit) on a free loopback port, and a
headless Chromium page signed in to it. Shared by the browser tests of the overview, the Label and the Fleet pages."""
import os, subprocess, sys
from contextlib import contextmanager
from pathlib import Path
import httpx, pytest
from receivers import free_port
from parkml.wait import wait_for

CHROMIUM = '/usr/bin/chromium'
PARKML = str(Path(sys.executable).parent/'parkml')
needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).is_file() and not os.environ.get('CI'),
                                    reason='Debian chromium is not installed (bin/setup installs it)')

@contextmanager
def running_app(log_path: Path, timeout: float = 120):
    "Start `parkml app` on loopback, wait until Streamlit says it is healthy, yield its base URL, stop it after"
    port = free_port()
    with open(log_path, 'w') as log:
        proc = subprocess.Popen([PARKML, 'app', '--server.port', str(port), '--server.address', '127.0.0.1',
                                 '--server.headless', 'true', '--browser.gatherUsageStats', 'false'],
                                stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
        base = f"http://127.0.0.1:{port}"
        def healthy():
            try:
                if httpx.get(f"{base}/_stcore/health", timeout=1).text == 'ok': return True
            except httpx.HTTPError: pass
            assert proc.poll() is None, Path(log_path).read_text()[-3000:]
        try:
            wait_for(healthy, timeout, f"streamlit (parkml app) at {base} answering /_stcore/health", every=0.5)
            yield base
        finally:
            proc.terminate()
            try: proc.wait(10)
            except subprocess.TimeoutExpired: proc.kill()

def signed_in_page(pw, base: str, name: str, password: str):
    "A headless Chromium (browser, page) on the app at `base`, with `name` signed in"
    browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                 args=['--no-sandbox', '--disable-dev-shm-usage'])
    page = browser.new_page(viewport={'width': 1400, 'height': 1000})
    page.goto(base, timeout=60_000)
    page.get_by_role('textbox', name='Name').fill(name, timeout=60_000)
    page.get_by_role('textbox', name='Password').fill(password)
    page.get_by_role('button', name='Sign in').click()
    return browser, page
