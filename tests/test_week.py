"""`parkml week --quick`: the whole loop on real images, checked against the stores it leaves (MLflow, prediction log,
alerts, audit), not against its own printout."""
import json, os
from pathlib import Path
import pandas as pd, pytest
from conftest import run_cli

pytestmark = pytest.mark.timeout(1800)   # the module's fixture runs a whole (quick) week: minutes, not the suite's usual 600 s

@pytest.fixture(scope='module')
def week(tmp_path_factory):
    reuse = os.environ.get('PARKML_TEST_WEEK_RUNS')   # a developer's shortcut: check a finished week's store again
    base = Path(reuse) if reuse else tmp_path_factory.mktemp('week')/'runs'
    runs = base/'week-demo'   # the week's own folder (setting week_dir), never the configured stores
    if not reuse:
        r = run_cli('week', '--quick', '--fresh', '--quiet', env={'PARKML_RUNS': str(base)}, timeout=1500)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
        (runs/'week'/'stdout.txt').write_text(r.stdout)
    out = (runs/'week'/'stdout.txt').read_text()
    env = dict(line.split('=', 1) for line in (runs/'demo.env').read_text().splitlines())   # what the week printed to use
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from parkml.config import get_settings
    res = json.loads((runs/'week'/'week.json').read_text())
    yield dict(base=base, runs=runs, env=env, out=out, res=res, table=pd.DataFrame(res['table']), cfg=get_settings())
    for k, v in old.items():
        if v is None: os.environ.pop(k, None)
        else: os.environ[k] = v

def test_the_table_is_printed_and_every_day_was_analysed(week):
    t, res = week['table'], week['res']
    assert list(t.day) == [1, 2, 3, 4, 5] and (t.frames > 300).all()
    assert res['failed_requests'] == 0 and 'failed requests across the week: 0' in week['out']
    for d in t.date: assert d in week['out']
    assert 'mlflow ui --backend-store-uri sqlite:///' in week['out'] and 'parkml app' in week['out']
    assert (week['runs']/'week'/'week.html').read_text().count('<img src="data:image/png;base64,') >= 1

def test_alerts_on_the_days_the_scenario_put_trouble(week):
    from parkml.alerts import open_alert_store
    t = week['table'].set_index('day')
    with open_alert_store() as st: alerts = pd.DataFrame([vars(a) for a in st.query()])
    by_day = alerts.groupby('day').rule.apply(set).to_dict()
    assert by_day == {d: set(r.split(', ')) for d, r in zip(t.date, t.alerts) if r}      # the table matches the store
    assert not by_day.get(t.loc[1, 'date'])                                              # the clean day is quiet
    trouble = alerts[alerts.day == t.loc[2, 'date']]
    assert (trouble.action == 'check the camera').any(), trouble[['rule', 'action', 'message']]
    assert trouble.rule.str.contains('integrity|frozen|gap').any() and trouble.rule.str.contains('drift').any()
    fair = alerts[alerts.rule.isin(['fairness_gap', 'recall_drop_cat'])]
    assert len(fair) and set(fair.day) <= set(t.date[t.index >= 3])                       # only on dusk days
    assert fair.message.str.contains('favours dogs over cats|Cat recall fell').any()

def test_versions_aliases_and_both_approvals_in_the_registry_and_audit_store(week):
    from parkml.tracking import mlflow_client
    from parkml.governance import audit_records
    v = week['res']['versions']
    assert v['first'] == '1' and v['released'] == v['retrained'] != v['first']
    cfg = week['cfg']; client = mlflow_client(cfg)
    rm = client.get_registered_model(cfg.model_name)
    assert str(rm.aliases['champion']) == v['released'] and str(rm.aliases['previous']) == v['first']
    aud = audit_records()
    ok = aud[aud.action == 'approve']
    assert set(ok.version.astype(str)) == {v['first'], v['released']}
    assert (ok.actor == 'demo-qa').all() and ok.simulated.astype(bool).all() and ok.note.str.contains('simulated').all()
    for ver in (v['first'], v['released']):
        tags = client.get_model_version(cfg.model_name, ver).tags
        assert tags['validation_status'] == 'passed' and tags['approval_status'] == 'approved'

def test_a_prediction_of_each_version_traces_back_to_its_approval(week):
    from parkml.predlog import open_store
    v = week['res']['versions']
    with open_store() as st: preds = st.predictions()
    assert set(preds.model_version.astype(str)) == {v['first'], v['released']}
    for ver in (v['first'], v['released']):
        pid = preds[preds.model_version.astype(str) == ver].sort_values('received').id.iloc[0]   # its first answer, as champion
        r = run_cli('trace', pid, '--json', env=week['env'])
        assert r.returncode == 0, r.stderr
        tr = json.loads(r.stdout)
        m = tr['model']
        assert str(tr['model_version']) == ver and m['staging']['status'] == 'passed' and tr['output']['label'] in ('cat', 'dog')
        assert m['approval']['by'] == 'demo-qa' and m['approval']['simulated'] == 'true' and 'champion' in m['aliases_at_time']

def test_every_version_is_scored_on_the_same_dark_evening_frames(week):
    """Both versions on the same labelled frames of the darkest evenings, as many as the store holds; scoring a version
    offline gives the recalls of its own answers in the log; the retrained version moves the boundary towards cats"""
    from types import SimpleNamespace
    from parkml.monitor import day_window
    from parkml.predlog import open_store
    from parkml.week_dusk import dark_frames, score_versions
    res, t, cfg = week['res'], week['table'].set_index('day'), week['cfg']
    first, new = res['dusk']
    assert (first['version'], new['version']) == (res['versions']['first'], res['versions']['released'])
    for k in ('frames', 'missing', 'n', 'n_cat', 'n_dog', 'days'): assert first[k] == new[k], (k, first, new)
    assert first['missing'] == 0 and first['n'] == first['frames'] and min(first['n_cat'], first['n_dog']) >= 15, first
    assert new['recall_cat'] > first['recall_cat'] and new['gap_points'] < first['gap_points'], (first, new)
    days = [SimpleNamespace(date=t.loc[d, 'date']) for d in first['days']]
    with open_store() as st:
        fb = pd.concat([st.feedback(s + 17 * 3600, e) for s, e in (day_window(p.date, cfg) for p in days)])
        assert len(fb[(fb.status == 'ok') & fb.true_label.isin(['cat', 'dog'])]) == first['frames']
        dk = dark_frames(st, days, cfg)
        own = dk[dk.model_version.astype(str) == new['version']]   # the frames it answered itself
        got, = score_versions(st, own, [new['version']], cfg)
    assert len(own) >= 30, len(own)
    for c in ('cat', 'dog'):
        k = own[own.true_label == c]
        assert abs(got[f'recall_{c}'] - (k.label == c).mean()) <= 0.02, (c, got, len(k))
    for d in (first, new):
        assert f"dark evenings, version {d['version']}: accuracy {d['accuracy']:.3f}, cat recall" in week['out']
    assert f"dark evenings: the same {first['frames']} labelled cat and dog frames" in week['out']
    html = (week['runs']/'week'/'week.html').read_text()
    assert 'Dark evenings: every version on the same labelled frames' in html and html.count('base64,') >= 2

def test_the_week_ran_in_its_own_folder_and_left_the_configured_stores_alone(week):
    assert (week['runs']/'.parkml-week').is_file() and (week['runs']/'mlflow.db').is_file()
    assert not (week['base']/'mlflow.db').exists() and not (week['base']/'governance.db').exists()
    assert f"set -a; . {week['runs']}/demo.env; set +a" in week['out'] and 'parkml audit verify' in week['out']
    r = run_cli('audit', 'verify', env=week['env'])
    assert r.returncode == 0 and 'OK' in r.stdout, r.stdout + r.stderr
    from parkml.users import list_users
    assert {(u['name'], u['role'], u['simulated']) for u in list_users()} == {('demo-qa', 'qa', True), ('demo-owner', 'owner', True)}

def test_the_week_refuses_a_folder_it_did_not_make_and_touches_nothing(tmp_path):
    park = tmp_path/'park'
    park.mkdir()
    (park/'mlflow.db').write_bytes(b'a registry the week did not create')
    (park/'governance.db').write_bytes(b'an audit store the week did not create')
    for env in ({'PARKML_WEEK_DIR': str(park)}, {'PARKML_RUNS': str(park), 'PARKML_WEEK_DIR': str(park)}):
        r = run_cli('week', '--quick', '--fresh', '--quiet', env=env, timeout=120)
        assert r.returncode == 2 and 'did not make' in r.stderr and 'nothing was touched' in r.stderr, r.stderr
        assert 'Traceback' not in r.stderr
    assert sorted(p.name for p in park.iterdir()) == ['governance.db', 'mlflow.db']
    assert (park/'mlflow.db').read_bytes() == b'a registry the week did not create'

def test_the_real_time_sentry_raises_the_camera_trouble_within_minutes(week):
    got = {d['name']: d for d in week['res']['sentry']}
    assert set(got) == {'fog', 'frozen camera', 'no traffic'} and {d['day'] for d in got.values()} == {2}
    assert got['frozen camera']['delay_min'] <= 30 and got['no traffic']['delay_min'] <= 30, got
    assert got['fog']['delay_min'] <= 120, got   # the fog thickens from the opening hour
    assert 'real-time sentry, day 2: frozen camera raised' in week['out']
