"""The fleet seen from the centre (issue 17): a park's own alias served by a real `parkml serve` through a real
`mlflow server` that then goes away; the daily analysis of several boxes in one central log; the fleet check, a real
`parkml ship` killed so its box falls silent, and the governance app's Fleet page (AppTest and headless Chromium)
showing a silent box."""
import json, os, re, signal, subprocess, sys, time
from pathlib import Path
import httpx, pytest
from conftest import run_cli
from receivers import free_port, Receiver
from test_service import Server
from app_server import running_app, signed_in_page, needs_chromium
from parkml.wait import wait_for

PARKML = str(Path(sys.executable).parent/'parkml')


def mlflow_server(runs: Path, log: Path) -> tuple[subprocess.Popen, str]:
    "`mlflow server` over the runs folder's registry on a free loopback port, once it answers"
    port = free_port()
    url = f'http://127.0.0.1:{port}'
    proc = subprocess.Popen([sys.executable, '-m', 'mlflow', 'server', '--backend-store-uri',
                             f"sqlite:///{runs}/mlflow.db", '--host', '127.0.0.1', '--port', str(port),
                             '--workers', '1'], start_new_session=True, stdout=open(log, 'w'), stderr=subprocess.STDOUT)
    def answers():
        assert proc.poll() is None, log.read_text()[-2000:]
        return httpx.get(f'{url}/health', timeout=1).status_code == 200
    wait_for(answers, 90, f'mlflow server at {url} answering /health', every=0.3, catch=httpx.TransportError)
    return proc, url


def test_park_alias_served_verified_canary_refused_and_registry_outage_survived(trained, tmp_path):
    """A park pins its own alias `champion-park-b`: its box serves the version behind it from the central registry
    (unverified, and /health says so); listed in verified_aliases, the same canary is refused until a signed release
    for that alias exists; the registry stopped, the box keeps answering and /health is degraded naming the setting"""
    from parkml.config import get_settings
    from parkml.tracking import mlflow_client
    from parkml.predlog import open_store
    runs, v = Path(os.environ['PARKML_RUNS']), str(trained['version'])
    cfg = get_settings()
    mlflow_client(cfg).set_registered_model_alias(cfg.model_name, 'champion-park-b', v)
    import pandas as pd
    photo = cfg.data/pd.read_csv(cfg.data/'manifest.csv').path.iloc[0]
    mlf, url = mlflow_server(runs, tmp_path/'mlflow.log')
    box = None
    try:
        env = dict(PARKML_TRACKING_URI=url, PARKML_SERVE_ALIAS='champion-park-b', PARKML_VERIFIED_ALIASES='champion',
                   MLFLOW_HTTP_REQUEST_MAX_RETRIES=0, MLFLOW_HTTP_REQUEST_TIMEOUT=3)
        verified = {**os.environ, 'PARKML_RUNS': str(runs), 'PARKML_PREDLOG_URI': f"sqlite:///{tmp_path}/v.db",
                    **{k: str(x) for k, x in env.items()}, 'PARKML_VERIFIED_ALIASES': 'champion,champion-park-b'}
        refused = subprocess.run([PARKML, 'serve', '--host', '127.0.0.1', '--port', str(free_port())], env=verified,
                                 capture_output=True, text=True, timeout=180)
        out = refused.stdout + refused.stderr
        assert refused.returncode != 0 and "alias 'champion-park-b'" in out and 'Traceback' not in out, out[-3000:]
        box = Server(runs, tmp_path/'park-b', **env)
        with httpx.Client(base_url=box.url, timeout=30) as c:
            h = c.get('/health').json()
            assert h['status'] == 'ok' and h['model']['alias'] == 'champion-park-b' and h['model']['version'] == v, h
            assert h['approval']['verified'] is False and 'verified_aliases' in h['approval']['why']
            assert h['registry']['setting'] == 'tracking_uri' and h['registry']['uri'] == url
            assert c.post('/predict', content=photo.read_bytes()).status_code == 200
            os.killpg(mlf.pid, signal.SIGKILL)           # the central registry goes away
            mlf.wait(30)
            wait_for(lambda: not c.get('/health').json()['registry']['ok'], 30,
                     'the box noticing the registry outage in its /health')
            h = c.get('/health').json()
            assert h['status'] == 'degraded' and h['model']['version'] == v, h
            assert f"registry at {url} (setting tracking_uri)" in h['registry']['error'], h['registry']
            answers = [c.post('/predict', content=photo.read_bytes()) for _ in range(3)]
            assert all(r.status_code == 200 and r.json()['model']['alias'] == 'champion-park-b' for r in answers)
        with open_store(f"sqlite:///{tmp_path/'park-b'}/predlog.db") as st:
            logged = st.predictions(0, time.time() + 60)
        assert len(logged) == 4 and set(logged.alias) == {'champion-park-b'}
        assert set(logged.model_version.astype(str)) == {v}
    finally:
        if box: box.stop()
        if mlf.poll() is None:
            os.killpg(mlf.pid, signal.SIGKILL)
            mlf.wait(30)


# ---------------------------------------------------------------- the daily analysis of a fleet

def box_day(monkeypatch, uri: str, frames: Path, box: str, **kw) -> dict:
    "A synthetic day of real holdout frames logged by box `box` (the store stamps its box id on every row)"
    from parkml.predlog import open_store
    from parkml import simulate as sim
    monkeypatch.setenv('PARKML_BOX_ID', box)
    with open_store(uri, frames) as st:
        return sim.synthetic_day(st, progress=False, **kw)


def test_fleet_day_names_the_frozen_camera_and_its_box_and_judges_each_box(trained, tmp_path, monkeypatch):
    """Two parks in one central log, both with a camera `cam-01`: park-b's evenings are dark (its cats missed) and
    its `cam-02` repeats one frame all day. The daily run names that camera with its box, raises the recall alert for
    park-b alone, and logs per-box and per-camera tables and plots to the day's one MLflow run"""
    import mlflow, pandas as pd
    from parkml.daily import run_daily
    from parkml.tracking import mlflow_client
    from parkml.alerts import open_alert_store
    uri, frames, day = f"sqlite:///{tmp_path}/centre.db", tmp_path/'frames', '2026-05-07'
    monkeypatch.setenv('PARKML_PREDLOG_URI', uri)
    monkeypatch.setenv('PARKML_FRAMES_DIR', str(frames))
    monkeypatch.setenv('PARKML_ALERTS_URI', f"sqlite:///{tmp_path}/alerts.db")
    common = dict(version=str(trained['version']), day=day, n_images=200, seed=0)
    a = box_day(monkeypatch, uri, frames, 'park-a', n=1000, **common)
    b = box_day(monkeypatch, uri, frames, 'park-b', n=1000, condition='night', severity=3, condition_hours=(15, 21),
                label_share=0.1, **common)
    box_day(monkeypatch, uri, frames, 'park-b', n=60, cameras=('cam-02',), **{**common, 'n_images': 1},
            label_share=0.0, telemetry=False, decode_failure_rate=0.0, store_frames=False)
    monkeypatch.delenv('PARKML_BOX_ID')
    out = run_daily(day, thresholds=dict(shap_frames=0), send=False, progress=False)   # the papermill notebook
    assert out['n_predictions'] == 2060, out
    assert 'box park-a: 1000 frames from park-a/cam-01' in out['summary'], out['summary']
    assert 'box park-b: 1060 frames from park-b/cam-01, park-b/cam-02' in out['summary']
    nb = json.loads(Path(out['html']).with_suffix('.ipynb').read_text())
    assert not any(o.get('output_type') == 'error' for c in nb['cells'] for o in c.get('outputs', []))
    with open_alert_store() as st: alerts = [st.get(i) for i in out['alerts']]
    frozen = [x for x in alerts if x.rule == 'integrity_frozen_camera']
    assert [x.camera for x in frozen] == ['park-b/cam-02'], [(x.rule, x.camera) for x in alerts]
    assert 'camera cam-02 of box park-b' in frozen[0].message and frozen[0].evidence['box_id'] == 'park-b'
    by_box = {(x.rule, x.camera) for x in alerts if x.camera and x.camera.endswith('/*')}
    assert ('recall_drop_cat', 'park-b/*') in by_box and not [r for r in by_box if r[1] == 'park-a/*'], by_box
    client = mlflow_client()
    arts = {f.path for d in ('plots', 'tables') for f in client.list_artifacts(out['run_id'], d)}
    assert {'plots/boxes.png', 'plots/cameras.png', 'tables/boxes.csv', 'tables/cameras.csv',
            'tables/camera_drift.csv'} <= arts, arts
    boxes = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=out['run_id'], artifact_path='tables/boxes.csv',
                                                            dst_path=str(tmp_path/'dl'))).set_index('box_id')
    assert boxes.predictions.to_dict() == {'park-a': 1000, 'park-b': 1060, 'chain': 2060}
    assert boxes.labels['park-a'] == a['n_labels'] and 0.9 * b['n_labels'] <= boxes.labels['park-b'] <= b['n_labels']
    assert boxes.accuracy['park-b'] < boxes.accuracy['chain'] < boxes.accuracy['park-a']
    m = client.get_run(out['run_id']).data.metrics
    assert m['box_park-a_predictions'] == 1000 and abs(m['box_park-b_label_accuracy'] - boxes.accuracy['park-b']) < 1e-9


# ---------------------------------------------------------------- the fleet check and the Fleet page

APP = Path(__file__).resolve().parents[1]/'app'


def report(store, box: str, backlog: int = 0, ahead_s: float = 0.0):
    "One status report of a box, as its shipper sends it (its clock `ahead_s` seconds ahead of the centre's)"
    store.report_status(dict(box_id=box, box_time=time.time() + ahead_s, backlog_rows=backlog,
                             backlog_age_s=backlog / 20, serve_alias='champion', model_version='1',
                             onnx_sha256='ab' * 32, cpu_percent=22.0, temperature_c=51.5,
                             disk_free_bytes=40_000_000_000, latency_p95_ms=31.0, code_version='0.1.0'))


def move_back(store, box: str, seconds: float):
    "The box was last heard from `seconds` earlier than it was: it has been silent that long"
    with store.db.write() as con:
        con.execute('UPDATE box_status SET last_contact = last_contact - ? WHERE box_id = ?', (seconds, box))


@pytest.fixture
def fleet_park(trained, tmp_path, monkeypatch):
    """The governance app's park with three boxes that reported to the centre; park-b's last report is an hour old
    (moved back by the hour it has not been heard from), and the fleet check has run"""
    import streamlit as st
    from park_fixture import make_park
    from parkml.predlog import open_store
    from parkml.fleet import check_fleet
    park = make_park(trained, tmp_path, monkeypatch)
    st.cache_data.clear()
    monkeypatch.setenv('PARKML_BOX_SILENT_AFTER_S', '600')
    with open_store() as s:
        for box, backlog in (('park-a', 0), ('park-b', 1200)): report(s, box, backlog)
        report(s, 'park-c', 4, ahead_s=400)                      # park-c's clock runs 400 s ahead
        move_back(s, 'park-b', 3600)
    park['raised'] = check_fleet(send=False)
    park['again'] = check_fleet(send=False)
    return park


def test_fleet_check_raises_one_alert_per_silence_and_resolves_it_when_the_box_is_back(fleet_park):
    from parkml.alerts import open_alert_store
    from parkml.predlog import open_store
    from parkml.fleet import check_fleet, SYSTEM
    got = [(a.rule, a.camera, a.severity) for a in fleet_park['raised']]
    assert got == [('box_silent', 'park-b/*', 'critical'), ('box_clock_skew', 'park-c/*', 'warning')], got
    assert fleet_park['again'] == []                     # the same silence: checked again, not raised again
    skew = fleet_park['raised'][1]
    assert 395 < skew.evidence['clock_skew_s'] < 410 and "park-c's clock is" in skew.message and 'ahead' in skew.message
    a = fleet_park['raised'][0]
    assert a.evidence['box_id'] == 'park-b' and 3590 < a.evidence['silent_s'] < 3700
    assert a.evidence['backlog_rows'] == 1200
    with open_store() as s:
        report(s, 'park-b')                              # park-b is back: the system resolves its silence, saying when
        back, = check_fleet(send=False)
        assert (back.id, back.rule, back.state, back.state_by) == (a.id, 'box_silent', 'resolved', SYSTEM)
        assert back.state_note.startswith('box park-b heard from again: contact at 20'), back.state_note
        assert check_fleet(send=False) == []             # resolved once
        move_back(s, 'park-b', 900)
    again, = check_fleet(send=False)                     # ... and silent again: a new silence, a new alert
    assert again.rule == 'box_silent' and again.id != a.id and again.state == 'open'
    with open_alert_store() as st:
        assert [x.id for x in st.query(rule='box_silent', state='open')] == [again.id]
        assert st.history(a.id)[['state', 'who']].values.tolist() == [['open', 'parkml'], ['resolved', SYSTEM]]
    shown = run_cli('fleet', check=True).stdout          # the command line shows the same table
    assert re.search(r'park-b\s+SILENT', shown) and re.search(r'park-a\s+ok', shown), shown
    out = run_cli('fleet', 'check', '--no-deliver', check=True).stdout
    assert out.strip().endswith('0 new alert(s), 0 resolved'), out


def fleet_page(park):
    "The Fleet page in AppTest, signed in as the viewer vic"
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(str(APP/'Home.py'), default_timeout=120)
    at.run()
    at.text_input[0].input('vic')
    at.text_input[1].input(park['users']['vic'][1])
    at.button[0].click()
    at.run()
    at.switch_page(str(APP/'pages'/'fleet.py'))
    at.run()
    assert not at.exception, at.exception
    return at


def test_fleet_page_marks_the_silent_box_apptest(fleet_park):
    at = fleet_page(fleet_park)
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith('Box park-b is SILENT: no report since'), errors
    assert '1200 rows' in errors[0]
    t = at.dataframe[0].value.data if hasattr(at.dataframe[0].value, 'data') else at.dataframe[0].value
    rows = t.set_index('box_id')
    assert rows.loc['park-b', 'state'] == 'SILENT' and rows.loc['park-a', 'state'] == 'ok', t
    assert rows.loc['park-b', 'open_alerts'] == 1 and rows.loc['park-a', 'open_alerts'] == 0
    assert rows.loc['park-c', 'model_version'] == '1' and rows.loc['park-c', 'temperature_c'] == 51.5
    assert rows.loc['park-c', 'state'] == 'clock off' and rows.loc['park-c', 'open_alerts'] == 1
    assert [m.value for m in at.metric][:2] == ['3', '1']
    assert 'Heard from again' not in [h.value for h in at.subheader]


def test_fleet_page_shows_the_silence_ended_when_the_box_is_back_apptest(fleet_park):
    "park-b reports again: the fleet check resolves its silence as the system, and the page says when and by whom"
    from parkml.predlog import open_store
    from parkml.fleet import check_fleet, SYSTEM
    with open_store() as s: report(s, 'park-b')
    assert [x.state for x in check_fleet(send=False)] == ['resolved']
    at = fleet_page(fleet_park)
    assert not at.error and [m.value for m in at.metric][:3] == ['3', '0', '1']   # park-c's clock is still open
    assert 'Heard from again' in [h.value for h in at.subheader]
    back = at.dataframe[1].value
    assert back.box_id.tolist() == ['park-b'] and back.by.tolist() == [SYSTEM], back
    assert back.why[0].startswith('box park-b heard from again: contact at '), back.why[0]


@needs_chromium
def test_fleet_page_marks_the_silent_box_in_chromium(fleet_park, tmp_path):
    from playwright.sync_api import sync_playwright, expect
    shots = tmp_path/'screenshots'
    shots.mkdir()
    with running_app(tmp_path/'streamlit.log') as base:
        with sync_playwright() as pw:
            browser, page = signed_in_page(pw, base, 'vic', fleet_park['users']['vic'][1])
            expect(page.get_by_text('Versions in play').first).to_be_visible(timeout=60_000)
            page.get_by_role('link', name='Fleet').click()
            expect(page.get_by_text('Box park-b is SILENT').first).to_be_visible(timeout=60_000)
            expect(page.locator('[data-testid="stDataFrame"]').first).to_be_visible(timeout=60_000)   # the table
            expect(page.locator('[data-testid="stImage"]').first).to_be_visible(timeout=60_000)       # the figure
            page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000)
            page.screenshot(path=str(shots/'fleet.png'), full_page=True)
            text = ' '.join(page.inner_text('body').split())
            assert 'Traceback' not in text and page.locator('[data-testid="stException"]').count() == 0, text[:2000]
            assert 'silent boxes 1' in text and 'Box park-b is SILENT: no report since' in text, text[:2000]
            browser.close()
        assert (shots/'fleet.png').stat().st_size > 10_000


def test_a_real_shipper_killed_makes_its_box_silent(tmp_path, monkeypatch):
    """A box's `parkml ship` (a real process) reports to a centre (here a SQLite centre: its own settings file, as
    `ship_to` names it); the fleet shows the box; the shipper is killed with SIGKILL; once `box_silent_after_s` has
    passed, `parkml fleet check` raises the silence and `parkml fleet` marks the box SILENT; the shipper started
    again, the next check resolves the silence as the system and sends it, resolved, to a real webhook receiver"""
    from parkml.predlog import open_store
    from parkml.fleet import fleet_view, SYSTEM
    root = Path(__file__).resolve().parents[1]
    centre = tmp_path/'centre'
    centre.mkdir()
    text = (root/'settings.ini').read_text()
    text = re.sub(r'(?m)^predlog_uri = .*$', f"predlog_uri = sqlite:///{centre}/predlog.db", text)
    text = re.sub(r'(?m)^frames_dir = .*$', f"frames_dir = {centre}/frames", text)
    (centre/'settings.ini').write_text(text)
    at_centre = dict(PARKML_PREDLOG_URI=f"sqlite:///{centre}/predlog.db", PARKML_FRAMES_DIR=str(centre/'frames'),
                     PARKML_ALERTS_URI=f"sqlite:///{tmp_path}/alerts.db", PARKML_BOX_SILENT_AFTER_S='3')
    home = tmp_path/'box'
    box = dict(PARKML_PREDLOG_URI=f"sqlite:///{home}/predlog.db", PARKML_FRAMES_DIR=str(home/'frames'),
               PARKML_BOX_ID='park-z', PARKML_RUNS=str(home/'runs'), PARKML_SHIP_TO=str(centre/'settings.ini'),
               PARKML_SHIP_IDLE_S='0.2', PARKML_SHIP_BACKOFF_S='0.2')
    monkeypatch.setenv('PARKML_BOX_ID', 'park-z')
    with open_store(box['PARKML_PREDLOG_URI'], box['PARKML_FRAMES_DIR']) as st:
        st.log_predictions([dict(label='cat', p_dog=0.2, camera='cam-01', ts=time.time() - 60 + i) for i in range(20)])
    monkeypatch.delenv('PARKML_BOX_ID')
    for k, v in at_centre.items(): monkeypatch.setenv(k, v)
    log = open(tmp_path/'ship.log', 'w')
    shipper = subprocess.Popen([PARKML, 'ship', '--quiet'], env={**os.environ, **box}, stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        def while_shipping(done):
            "`done` as a condition to wait for; the shipper's log as the error if the shipper dies first"
            def cond():
                if done(): return True
                assert shipper.poll() is None, (tmp_path/'ship.log').read_text()[-2000:]
            return cond
        def backlog_empty():
            with open_store() as st: seen = st.box_status()
            return len(seen) and seen.backlog_rows.iloc[0] == 0
        wait_for(while_shipping(backlog_empty), 60, "the box's backlog shipped to the centre", every=0.3)
        t = fleet_view()
        assert t.box_id.tolist() == ['park-z'] and t.state.tolist() == ['ok'] and t.code_version.iloc[0], t
        os.kill(shipper.pid, signal.SIGKILL)                   # the box goes dark mid-work
        shipper.wait(30)
        time.sleep(3.5)
        out = run_cli('fleet', 'check', '--no-deliver', check=True).stdout
        assert 'box_silent' in out and 'Box park-z has not reported to the centre since' in out, out
        assert re.search(r'park-z\s+SILENT', run_cli('fleet', check=True).stdout)
        shipper = subprocess.Popen([PARKML, 'ship', '--quiet'], env={**os.environ, **box}, stdout=log,
                                   stderr=subprocess.STDOUT)            # the box is back
        wait_for(while_shipping(lambda: fleet_view().state.tolist() == ['ok']), 60,
                 'the fleet showing box park-z ok again', every=0.3)
        hook = Receiver()                                      # the silence's end is sent as the alert was
        try: out = run_cli('fleet', 'check', env=dict(PARKML_ALERT_WEBHOOK_URL=hook.url), check=True).stdout
        finally: hook.stop()
        assert 'box park-z heard from again: contact at' in out and f"({SYSTEM})" in out, out
        assert out.strip().endswith('0 new alert(s), 1 resolved'), out
        assert [(g['rule'], g['state'], g['state_by']) for g in hook.got] == [('box_silent', 'resolved', SYSTEM)]
    finally:
        if shipper.poll() is None:
            shipper.kill()
            shipper.wait(30)
        log.close()


def test_fleet_page_shows_a_box_that_refuses_a_release_apptest(fleet_park):
    "park-a's status report says it refuses version 2 (its signature fails at the edge): the page names it and why"
    import pandas as pd
    from parkml.predlog import open_store
    with open_store() as s:
        s.report_status(dict(box_id='park-a', box_time=time.time(), backlog_rows=0, serve_alias='champion',
                             model_version='1', refused_version='2',
                             refused_reason='the signature of version 2 does not verify with the trusted keys'))
    at = fleet_page(fleet_park)
    warnings = [w.value for w in at.warning]
    assert warnings == ['Box park-a refuses version 2 of champion: the signature of version 2 does not verify with '
                        'the trusted keys; it keeps serving version 1'], warnings
    t = at.dataframe[0].value.data if hasattr(at.dataframe[0].value, 'data') else at.dataframe[0].value
    rows = t.set_index('box_id')
    assert rows.loc['park-a', 'state'] == 'refuses release' and rows.loc['park-a', 'refused_version'] == '2', t
    assert rows.loc['park-b', 'state'] == 'SILENT' and pd.isna(rows.loc['park-c', 'refused_reason'])
