"""Prediction traces on a real store: every fact matches the prediction log, MLflow and the audit store; the CLI prints it;
the fast path (version snapshot, no MLflow or pandas import) gives the same trace and is never stale."""
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
        pid = st.log_prediction(dict(ts=park['t_before'] - 60, received=park['t_before'] - 59, camera='cam-01', model_name=park['name'], model_version='1',
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

def _settle():
    "Let the MLflow store's last write age past SETTLE_S, so a trace may keep a snapshot"
    from parkml.trace import SETTLE_S
    time.sleep(SETTLE_S + .2)

def _same(a, b): return {**a, 'model_facts_from': None} == {**b, 'model_facts_from': None}

def test_snapshot_path_gives_the_mlflow_trace_without_mlflow_or_pandas(park):
    "The fast path (snapshot) and the MLflow path give the same trace; a fresh process on the fast path imports neither"
    from parkml.trace import trace, snapshot_path
    pid = park['ids'][0]
    _settle()
    slow = trace(pid, fresh=True)
    assert slow['model_facts_from'] == 'mlflow' and snapshot_path(park['name'], '1', park['cfg']).is_file()
    fast = trace(pid)
    assert fast['model_facts_from'] == 'snapshot' and _same(fast, slow)
    assert trace(pid, fresh=True)['model_facts_from'] == 'mlflow'  # --fresh always asks MLflow
    code = ("import json, sys; from parkml.trace import trace; t = trace(sys.argv[1]); "
            "print(json.dumps(dict(t=t, mods=[m for m in ('mlflow', 'pandas') if m in sys.modules])))")
    import subprocess, sys, os
    r = subprocess.run([sys.executable, '-c', code, pid], capture_output=True, text=True, env={**os.environ, **park['env']}, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out['mods'] == [] and out['t']['model_facts_from'] == 'snapshot' and _same(out['t'], json.loads(json.dumps(slow)))
    r = run_cli('trace', pid, '--json', env=park['env'])
    assert r.returncode == 0 and _same(json.loads(r.stdout), json.loads(json.dumps(slow))), r.stderr
    r = run_cli('trace', pid, '--fresh', env=park['env'])
    assert r.returncode == 0 and 'version facts read from MLflow' in r.stdout, r.stderr

def test_snapshot_is_never_stale(park):
    "Approval, alias moves, a staging verdict written straight to MLflow and a new audit record all show up at once"
    from parkml.trace import trace, snapshot_path
    from parkml.governance import approve, release, open_governance
    from parkml.users import authenticate
    client, name, pid = park['client'], park['name'], park['ids'][0]
    _settle()
    assert trace(pid)['model_facts_from'] == 'mlflow' and trace(pid)['model_facts_from'] == 'snapshot'
    who = {n: authenticate(n, pw, env=False) for n, (_, pw) in park['users'].items()}   # signed in
    approve('2', who['ana'], 'version 2 read'); release('2', who['olu'], 'better model')
    t = trace(pid)  # right after the moves: MLflow again, and no snapshot kept from a store changed this instant
    assert t['model_facts_from'] == 'mlflow' and t['model']['aliases_now'] == ['previous'] and t['model']['aliases_at_time'] == ['champion']
    _settle()
    assert trace(pid)['model_facts_from'] == 'mlflow'
    t = trace(pid)
    assert t['model_facts_from'] == 'snapshot' and t['model']['aliases_now'] == ['previous']
    # a verdict written by the staging run: version tags only, no audit record
    client.set_model_version_tag(name, '1', 'validation_status', 'failed')
    client.set_model_version_tag(name, '1', 'validation_reasons', 'night accuracy dropped 31 points')
    t = trace(pid)
    assert t['model_facts_from'] == 'mlflow' and t['model']['staging']['status'] == 'failed'
    assert t['model']['staging']['reasons'] == 'night accuracy dropped 31 points'
    _settle(); trace(pid)
    assert trace(pid)['model_facts_from'] == 'snapshot'
    with open_governance() as gov:  # a new audit record of the version alone also retires the snapshot
        rid = gov.append([dict(actor='ana', role='qa', action='reject', model=name, version='1', note='fails at night')])[0]
    t = trace(pid)
    assert t['model_facts_from'] == 'mlflow' and t['model']['approval']['audit_id'] == rid
    snapshot_path(name, '1', park['cfg']).write_text('{not json')  # a broken snapshot is only a miss
    assert trace(pid)['model_facts_from'] == 'mlflow'

def test_version_not_in_the_registry(park):
    from parkml.trace import trace, snapshot_path
    from parkml.predlog import open_store
    with open_store() as st:
        pid = st.log_prediction(dict(camera='cam-01', model_name=park['name'], model_version='99', run_id='gone', label='cat', p_dog=.1))
    t = trace(pid)
    assert 'missing' in t['model'] and '99' in t['model']['missing'] and not snapshot_path(park['name'], '99', park['cfg']).exists()
