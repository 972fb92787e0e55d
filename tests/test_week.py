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
    runs = Path(reuse) if reuse else tmp_path_factory.mktemp('week')/'runs'
    env = {'PARKML_RUNS': str(runs)}
    if not reuse:
        r = run_cli('week', '--quick', '--fresh', '--quiet', env=env, timeout=1500)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
        (runs/'week'/'stdout.txt').write_text(r.stdout)
    out = (runs/'week'/'stdout.txt').read_text()
    old = os.environ.get('PARKML_RUNS'); os.environ['PARKML_RUNS'] = str(runs)
    from parkml.config import get_settings
    res = json.loads((runs/'week'/'week.json').read_text())
    yield dict(runs=runs, env=env, out=out, res=res, table=pd.DataFrame(res['table']), cfg=get_settings())
    if old is None: os.environ.pop('PARKML_RUNS', None)
    else: os.environ['PARKML_RUNS'] = old

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

def test_the_retrained_model_closes_the_dusk_gap(week):
    first, new = week['res']['dusk']
    assert first['n'] >= 30 and new['n'] >= 30
    assert abs(new['gap_points']) < abs(first['gap_points'])
