"Prediction traces on a real store: every fact matches the prediction log, MLflow and the audit store; the CLI prints it."
import json, time
import pytest
from conftest import run_cli
from park_fixture import make_park

@pytest.fixture
def park(trained, tmp_path, monkeypatch): return make_park(trained, tmp_path, monkeypatch)

def test_trace_matches_the_store_and_mlflow(park):
    from parkml.trace import trace, format_trace
    from parkml.predlog import open_store
    from parkml.governance import audit_records
    client, name, src = park['client'], park['name'], park['src']
    pid = park['ids'][0]  # labelled against the model (i % 10 == 0)
    t = trace(pid)
    with open_store() as st: p = st.get_prediction(pid)
    assert (t['prediction_id'], t['camera'], t['output']['label'], t['output']['p_dog']) == (pid, p['camera'], p['label'], p['p_dog'])
    assert t['feedback']['label'] == p['true_label'] != p['label'] and t['correct'] is False
    assert t['frame']['retained'] and open(t['frame']['path'], 'rb').read() == b'stand-in frame 0'
    m, run = t['model'], client.get_run(src.run_id)
    assert t['model_version'] == '1' and m['run_id'] == src.run_id
    assert m['code_commit'] == run.data.tags['parkml.code_commit'] and m['data_version'] == run.data.tags['parkml.data_version']
    assert m['params'] == run.data.params and m['params']['head_c']
    tags = client.get_model_version(name, '1').tags
    assert m['staging'] == dict(status='passed', run_id=park['staging']['1'], reasons='')
    ap = audit_records(version='1', action='approve').iloc[-1]
    assert m['approval']['by'] == tags['approved_by'] == ap.actor == 'ana' and m['approval']['audit_id'] == int(ap.id)
    assert m['approval']['note'] == 'staging report of version 1 read'
    assert m['aliases_at_time'] == ['champion'] and m['aliases_now'] == ['champion']
    txt = format_trace(t)
    for want in (pid, 'WRONG', src.run_id, 'approval   approved by ana (qa)', 'alias then champion', park['staging']['1']):
        assert want in txt, want
    unlabelled = trace(park['ids'][-1])
    assert unlabelled['feedback'] is None and unlabelled['correct'] is None

def test_alias_at_the_time_of_an_older_prediction(park):
    "A prediction made before version 1 was released: version 1 held no alias then"
    from parkml.trace import trace
    from parkml.predlog import open_store
    with open_store() as st:
        pid = st.log_prediction(dict(ts=park['t_before'] - 60, camera='cam-01', model_name=park['name'], model_version='1',
                                     run_id=park['src'].run_id, alias='challenger', label='cat', p_dog=.2))
    t = trace(pid)
    assert t['model']['aliases_at_time'] == [] and t['served_alias'] == 'challenger' and t['frame']['sha'] is None

def test_trace_cli(park):
    pid = park['ids'][5]
    r = run_cli('trace', pid, env=park['env'])
    assert r.returncode == 0, r.stderr
    assert pid in r.stdout and 'approved by ana' in r.stdout and park['src'].run_id in r.stdout
    r = run_cli('trace', pid, '--json', env=park['env'])
    assert json.loads(r.stdout)['model']['staging']['run_id'] == park['staging']['1']
    r = run_cli('trace', 'p-no-such-id', env=park['env'])
    assert r.returncode == 2 and 'no prediction' in r.stderr and 'Traceback' not in r.stderr
