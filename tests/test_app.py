"The governance app under Streamlit's AppTest harness, over a real MLflow store, prediction log, audit and alert stores."
from pathlib import Path
import pytest
from park_fixture import make_park

APP = Path(__file__).resolve().parents[1]/'app'
PAGES = ['overview', 'models', 'decide', 'monitoring', 'alerts', 'audit']

@pytest.fixture
def park(trained, tmp_path, monkeypatch):
    import streamlit as st
    p = make_park(trained, tmp_path, monkeypatch)
    st.cache_data.clear()  # cached queries of another test's stores must not leak in
    return p

def app():
    from streamlit.testing.v1 import AppTest
    return AppTest.from_file(str(APP/'Home.py'), default_timeout=120)

def signed_in(name, pw):
    at = app(); at.run()
    assert not at.exception, at.exception
    at.text_input[0].input(name); at.text_input[1].input(pw)
    at.button[0].click(); at.run()
    return at

def page(at, name):
    at.switch_page(str(APP/'pages'/f"{name}.py")); at.run()
    assert not at.exception, f"{name}: {at.exception}"
    return at

def texts(at) -> str:
    return '\n'.join(str(e.value) for kind in ('markdown', 'caption', 'code', 'info', 'warning', 'error', 'success', 'title', 'header', 'subheader')
                     for e in getattr(at, kind))

def test_sign_in_wrong_password_and_lock_out(park, monkeypatch):
    """A wrong password is refused; the right one signs in with the role from the users file; after `lockout_after`
    wrong passwords in a row the name is locked out, the right password included, and nothing is written"""
    from parkml.governance import audit_records
    monkeypatch.setenv('PARKML_LOCKOUT_AFTER', '3')
    users = Path(park['env']['PARKML_USERS_FILE'])
    before = (len(audit_records()), users.read_bytes())
    at = signed_in('ana', 'not-her-password')
    assert any('wrong password' in e.value for e in at.error) and 'actor' not in at.session_state
    at = signed_in('ana', park['users']['ana'][1])   # one wrong password does not lock her out
    assert at.session_state['authentication_status'] and at.session_state['actor'].role == 'qa'
    assert at.session_state['actor'].proof == 'password'
    assert 'Signed in as **ana** (qa)' in texts(at) and not at.exception
    for guess in ('olu-secret-0', 'olu-secret-2', 'olu-secret-3'):
        at = signed_in('olu', guess)
        assert any("wrong password for 'olu'" in e.value for e in at.error) and 'actor' not in at.session_state
    at = signed_in('olu', park['users']['olu'][1])   # the right password, too late
    assert any('olu is locked out' in e.value for e in at.error), [e.value for e in at.error]
    assert 'actor' not in at.session_state and not at.session_state['authentication_status']
    assert 'Signed in as' not in texts(at) and not [b for b in at.button if b.key == 'decide-go']
    assert (len(audit_records()), users.read_bytes()) == before   # nothing written: no audit record, same users file

def test_every_page_renders(park):
    at = signed_in('olu', park['users']['olu'][1])
    for name in PAGES:
        page(at, name)
    at = page(at, 'overview')
    assert 'champion' in at.dataframe[0].value.alias.tolist()
    at = page(at, 'models')
    assert set(at.dataframe[0].value.version) == {1, 2, 3} and 'not staged' in texts(at)  # newest first: version 3
    at.selectbox(key='models-version').set_value('1').run()
    assert not at.exception and 'staging passed' in texts(at) and 'Version 1  (champion)' in texts(at)
    assert len(at.get('image')) >= 2  # the training run's plots

def test_qa_approves_in_the_app(park):
    from parkml.governance import audit_records
    at = page(signed_in('ana', park['users']['ana'][1]), 'decide')
    at.radio(key='decide-action').set_value('approve').run()
    at.selectbox(key='decide-version').set_value('2').run()
    at.text_area(key='decide-note').input('staging report of version 2 read').run()
    assert 'allowed: the rules and the role permit it' in texts(at)
    at.button(key='decide-go').click().run()
    assert not at.exception and any('done: approve' in s.value for s in at.success)
    tags = park['client'].get_model_version(park['name'], '2').tags
    assert tags['approval_status'] == 'approved' and tags['approved_by'] == 'ana' and tags['approval_note'] == 'staging report of version 2 read'
    rec = audit_records(version='2', action='approve').iloc[-1]
    assert (rec.actor, rec.role, rec.note, rec.staging_run_id) == ('ana', 'qa', 'staging report of version 2 read', park['staging']['2'])

def test_viewer_cannot_act(park):
    from parkml.governance import audit_records
    n = len(audit_records())
    at = page(signed_in('vic', park['users']['vic'][1]), 'decide')
    assert 'may only read' in texts(at) and not [b for b in at.button if b.key == 'decide-go']
    at = page(at, 'alerts')
    assert 'may not alert_handled' in texts(at) and not [b for b in at.button if b.key == 'alerts-ack']
    assert len(audit_records()) == n

def test_release_of_an_unapproved_version_is_refused_with_the_reason(park):
    at = page(signed_in('olu', park['users']['olu'][1]), 'decide')
    at.radio(key='decide-action').set_value('release').run()
    at.selectbox(key='decide-version').set_value('2').run()
    assert 'version 2 was not approved by QA' in texts(at)
    at.button(key='decide-go').click().run()
    assert any('refused' in e.value and 'version 2 was not approved by QA' in e.value for e in at.error)
    assert {a: str(v) for a, v in park['client'].get_registered_model(park['name']).aliases.items()} == {'champion': '1'}

def test_alert_acknowledged_in_the_app_is_acknowledged_in_the_store(park):
    from parkml.alerts import open_alert_store
    aid = park['alerts'][1].id
    at = page(signed_in('olu', park['users']['olu'][1]), 'alerts')
    at.selectbox(key='alerts-id').set_value(aid).run()
    at.text_input(key='alerts-note').input('camera cleaned').run()
    at.button(key='alerts-ack').click().run()
    assert not at.exception and any('acknowledged by olu' in s.value for s in at.success)
    with open_alert_store() as s:
        a = s.get(aid)
        assert (a.state, a.state_by, a.state_note) == ('acknowledged', 'olu', 'camera cleaned')
        assert s.history(aid).state.tolist() == ['open', 'acknowledged']

def test_roll_back_for_an_alert_moves_champion_and_records_the_action(park):
    """An owner rolls back from the Alerts page: champion returns to the previous version through governance, and the
    alert's action names the audit record and the version now served (parkml.appviews.rollback_for_alert)"""
    from parkml.alerts import open_alert_store
    from parkml.governance import approve, release, audit_records
    from parkml.users import authenticate
    approve('2', authenticate('ana', park['users']['ana'][1], env=False), 'staging report of version 2 read')
    release('2', authenticate('olu', park['users']['olu'][1], env=False), 'version 2 to production')
    aid = park['alerts'][0].id
    at = page(signed_in('olu', park['users']['olu'][1]), 'alerts')
    at.selectbox(key='alerts-id').set_value(aid).run()
    at.text_input(key='alerts-note').input('version 2 errs at dusk').run()
    at.button(key='alerts-rollback').click().run()
    assert not at.exception and any('champion -> version 1' in s.value for s in at.success), [e.value for e in at.error]
    aliases = {a: str(v) for a, v in park['client'].get_registered_model(park['name']).aliases.items()}
    assert aliases['champion'] == '1'
    rec = audit_records(action='rollback').iloc[-1]
    assert (rec.actor, rec.note) == ('olu', 'version 2 errs at dusk')
    with open_alert_store() as s:
        act = s.actions(aid).iloc[-1]
    assert (act.kind, act.actor, act.status, str(act.version)) == ('roll back', 'olu', 'done', '1')
    assert act.ref.startswith('audit:')


def test_retrain_now_starts_a_real_retraining_job_for_the_alert(park):
    """The owner's button starts `parkml retrain` as a process of its own; the job records the request (audit store) and
    its running action on the alert before it trains. The test stops the job once both are there."""
    import os, re
    import psutil
    from parkml.alerts import open_alert_store
    from parkml.wait import wait_for
    from parkml.governance import audit_records
    aid = park['alerts'][0].id
    at = page(signed_in('olu', park['users']['olu'][1]), 'alerts')
    at.selectbox(key='alerts-id').set_value(aid).run()
    at.text_input(key='alerts-note').input('labels say the model slipped').run()
    at.button(key='alerts-retrain').click().run()
    assert not at.exception, at.exception
    msg = next(str(s.value) for s in at.success if 'retraining started' in str(s.value))
    pid = int(re.search(r'as process (\d+)', msg).group(1))
    try:
        cmd = psutil.Process(pid).cmdline()
        assert cmd[3:] == ['retrain', '--reason', 'labels say the model slipped', '--user', 'olu', '--quiet',
                           '--alert', aid], cmd
        env = psutil.Process(pid).environ()   # the job proves who asked with a token of its own, not on its cmd line
        assert env['PARKML_USER'] == 'olu' and env['PARKML_TOKEN'].startswith('pkt_') and 'PARKML_PASSWORD' not in env
        assert not any(env['PARKML_TOKEN'] in c for c in cmd)
        def started():
            "The retraining's action marked running and its request in the audit store, once both are there"
            with open_alert_store() as s: acts = s.actions(aid)
            running = acts[(acts.kind == 'retrain') & (acts.actor == 'olu (owner)') & (acts.status == 'running')]
            rec = audit_records(action='retrain_requested')
            req = rec[(rec.actor == 'olu') & (rec.note == 'labels say the model slipped')]
            return (running, req) if len(running) and len(req) else None
        running, req = wait_for(started, 120, 'the retraining marked running with its request in the audit store',
                                every=0.5)
        assert len(running) == 1 and len(req) == 1, (running, req)
        assert re.search(r'log (\S+)$', msg) and os.path.isfile(re.search(r'log (\S+)$', msg).group(1))
    finally:   # stop the job and all it started (its notebook kernel runs in a session of its own, so not by group)
        try: job = psutil.Process(pid); procs = job.children(recursive=True) + [job]
        except psutil.NoSuchProcess: procs = []
        for p in procs:
            try: p.kill()
            except psutil.NoSuchProcess: pass

def test_trace_and_audit_in_the_app(park):
    at = page(signed_in('vic', park['users']['vic'][1]), 'audit')
    at.text_input(key='trace-id').input(park['ids'][0]).run()
    assert not at.exception and park['ids'][0] in texts(at) and 'approved by ana' in texts(at)
    at.selectbox(key='audit-version').set_value('1').run()
    at.button(key='audit-go').click().run()
    assert not at.exception and any('logged to MLflow run' in s.value for s in at.success)
    assert park['client'].get_model_version(park['name'], '1').tags['audit_run_id']

def test_users_add_command(tmp_path, monkeypatch):
    """`parkml users add`: the first user is an owner; after that only a signed-in owner adds people; the new password
    comes from PARKML_NEW_PASSWORD (never a flag) and is kept only as a hash; qa and owner get trusted signing keys"""
    from conftest import run_cli
    from parkml.users import authenticate, list_users
    from parkml.signing import trusted_keys
    f = tmp_path/'users.yaml'
    env = dict(PARKML_USERS_FILE=str(f), PARKML_KEYS_DIR=str(tmp_path/'keys'),
               PARKML_TRUSTED_KEYS=str(tmp_path/'keys.json'))
    for k, v in env.items(): monkeypatch.setenv(k, v)
    r = run_cli('users', 'add', 'own1', '--role', 'owner', '--password', 'own1-secret-pw')
    assert r.returncode == 2 and 'unrecognized arguments: --password' in r.stderr and not f.exists()
    r = run_cli('users', 'add', 'qa1', '--role', 'qa', env=dict(PARKML_NEW_PASSWORD='qa1-secret-pw'))
    assert r.returncode == 2 and 'the first user must be an owner' in r.stderr and not f.exists()
    r = run_cli('users', 'add', 'own1', '--role', 'owner', env=dict(PARKML_NEW_PASSWORD='own1-secret-pw'))
    assert r.returncode == 0 and 'own1 (owner)' in r.stdout, r.stderr
    owner = dict(PARKML_USER='own1', PARKML_PASSWORD='own1-secret-pw')
    r = run_cli('users', 'add', 'qa1', '--role', 'qa', env=dict(owner, PARKML_NEW_PASSWORD='qa1-secret-pw'))
    assert r.returncode == 0 and 'qa1 (qa)' in r.stdout, r.stderr
    assert authenticate('qa1', 'qa1-secret-pw', env=False).role == 'qa' and 'secret' not in f.read_text()
    assert authenticate('own1', 'own1-secret-pw', env=False).role == 'owner'
    assert [(u['name'], u['role']) for u in list_users(f)] == [('own1', 'owner'), ('qa1', 'qa')]
    assert {n: k['role'] for n, k in trusted_keys().items()} == {'own1': 'owner', 'qa1': 'qa'}
    before = f.read_bytes()
    qa, wrong = dict(PARKML_USER='qa1', PARKML_PASSWORD='qa1-secret-pw'), dict(owner, PARKML_PASSWORD='not-the-pw')
    for who, name, new, why in [(owner, 'qa1', 'another-pw-1', 'exists'), (owner, 'x', 'short', 'at least 8'),
                                ({}, 'x', 'x-secret-pw', 'who is acting?'), (qa, 'x', 'x-secret-pw', 'only an owner'),
                                (wrong, 'x', 'x-secret-pw', "wrong password for 'own1'")]:
        r = run_cli('users', 'add', name, '--role', 'qa', env=dict(who, PARKML_NEW_PASSWORD=new))
        assert r.returncode == 2 and why in r.stderr and 'Traceback' not in r.stderr, (why, r.stderr)
    assert f.read_bytes() == before and authenticate('qa1', 'qa1-secret-pw', env=False)   # nothing changed
    assert run_cli('users', 'list').stdout.split() == ['own1', 'owner', 'qa1', 'qa']
