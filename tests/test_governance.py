"""Approval, release and rollback on a real MLflow registry by people who proved who they are: roles, refusals with
reasons, signed statements about the exact ONNX bytes, alias moves, audit records, the CLI."""
import json, re, sqlite3, time
from datetime import datetime
import pandas as pd, pytest
from pathlib import Path
from conftest import run_cli

from parkml.config import get_settings
from parkml.tracking import mlflow_client, resolve_version, registry_sha256
from parkml.governance import (Actor, Refused, approve, reject, release, rollback, set_challenger, retrain_requested,
                               explain_action, audit_records, alias_history, aliases_at, STAGING_ACTOR)
from parkml.signing import trusted_keys, write_trusted_keys, parse_signed
from parkml.auditlog import verify_signature as verify
from parkml.users import add_user, authenticate

PEOPLE = {'olu': ('owner', 'olu-secret-1'), 'ana': ('qa', 'ana-secret-1'), 'bea': ('qa', 'bea-secret-1'),
          'vic': ('viewer', 'vic-secret-1'), 'pat': ('owner', 'pat-secret-1'), 'demo-qa': ('qa', 'demo-secret-1')}

@pytest.fixture
def reg(trained, tmp_path, monkeypatch):
    """A registered model of this test's own with four versions of the trained model (same run, same ONNX graph), a
    fresh audit store, and the park's people (users file, keys, trusted keys) signed in. Calling it plays the staging
    run's part: it sets the tags the staging run writes, the sha256 of the tested ONNX bytes included."""
    src = mlflow_client().get_model_version(get_settings().model_name, trained['version'])
    env = dict(PARKML_MODEL_NAME=f"gov-{tmp_path.name}", PARKML_GOVERNANCE_URI=f"sqlite:///{tmp_path}/governance.db",
               PARKML_USERS_FILE=str(tmp_path/'users.yaml'), PARKML_KEYS_DIR=str(tmp_path/'keys'),
               PARKML_TRUSTED_KEYS=str(tmp_path/'trusted_keys.json'))
    for k, v in env.items(): monkeypatch.setenv(k, v)
    for k in ('PARKML_USER', 'PARKML_PASSWORD', 'PARKML_TOKEN'): monkeypatch.delenv(k, raising=False)
    cfg = get_settings(); client = mlflow_client(cfg)
    client.create_registered_model(cfg.model_name)
    lineage = {k: v for k, v in src.tags.items() if k.startswith('parkml.')}   # not another test's verdict or approval
    for _ in range(4): client.create_model_version(cfg.model_name, src.source, src.run_id, tags=lineage)
    owner = None
    for name, (role, pw) in PEOPLE.items():   # the first owner, then the others added by that owner, signed in
        add_user(name, role, pw, by=owner, simulated=name in ('pat', 'demo-qa'))
        owner = owner or authenticate('olu', pw, env=False)
    sha = registry_sha256(client.get_model_version(cfg.model_name, '1'))
    def stage(v, status='passed', why=''):
        tags = dict(validation_status=status, staging_run_id=f"run-{v}-{time.time_ns()}", validation_reasons=why,
                    staging_onnx_sha256=sha)
        for k, val in tags.items(): client.set_model_version_tag(cfg.model_name, str(v), k, val)
        return tags['staging_run_id']
    stage.client, stage.name, stage.sha, stage.env = client, cfg.model_name, sha, env
    stage.who = {n: authenticate(n, pw, env=False) for n, (_, pw) in PEOPLE.items()}
    return stage

def aliases(reg): return {a: str(v) for a, v in reg.client.get_registered_model(reg.name).aliases.items()}
def tags(reg, v): return reg.client.get_model_version(reg.name, str(v)).tags
def people(reg): return reg.who['ana'], reg.who['olu'], reg.who['vic']

def test_release_refuses_unapproved_failed_and_unstaged_versions_with_reasons(reg):
    QA, OWNER, _ = people(reg)
    reg(1); reg(2, 'failed', 'recall gap 14.2 points > 5 points (cats missed)')
    assert tags(reg, 3).get('validation_status', 'pending') == 'pending'
    for v, why in [(1, 'version 1 was not approved by QA'), (2, 'version 2 failed staging: recall gap 14.2 points > 5 points'),
                   (3, "version 3 has not passed staging (validation_status 'pending')")]:
        with pytest.raises(Refused, match=re.escape(why)): release(v, OWNER)
        assert why in explain_action('release', v, OWNER) and 'refused: ' in explain_action('release', v, OWNER)
    with pytest.raises(Refused, match='version 2 failed staging.*cannot be approved'): approve(2, QA)
    with pytest.raises(Refused, match='version 3 has no staging run yet'): approve(3, QA)
    approve(1, QA, 'read the report'); reg(1)  # staged again after the approval
    with pytest.raises(Refused, match='staged again since'): release(1, OWNER)
    assert 'champion' not in aliases(reg) and audit_records(action='release').empty
    approve(1, QA, 'read the new report'); release(1, OWNER)
    with pytest.raises(Refused, match='already the champion'): release(1, OWNER)

def test_approve_then_release_signs_the_bytes_moves_champion_and_records_everything(reg):
    QA, OWNER, _ = people(reg)
    runs = {v: reg(v) for v in (1, 2)}
    t0 = time.time()
    approve(1, reg.who['demo-qa'], 'simulated approval'); release(1, OWNER, 'first model')
    assert aliases(reg) == {'champion': '1'}
    approve('2', QA, 'dusk recall fixed')
    assert 'alias champion: 1 -> 2' in explain_action('release', 2, OWNER)
    recs = release(2, OWNER, 'better at dusk')
    assert aliases(reg) == {'champion': '2', 'previous': '1'} and str(resolve_version('champion').version) == '2'
    assert [(r['alias'], r['from_version'], r['to_version']) for r in recs] == [('champion', '1', '2'), ('previous', None, '1')]
    t1, t2 = tags(reg, 1), tags(reg, 2)
    assert t2['approval_status'] == 'approved' and t2['approved_by'] == 'ana' and t2['approval_note'] == 'dusk recall fixed'
    assert t2['approval_simulated'] == 'false' and t1['approval_simulated'] == 'true' and t2['approval_staging_run'] == runs[2]
    assert t0 - 1 <= datetime.fromisoformat(t2['approval_time']).timestamp() <= time.time() + 1
    # the signed statements: QA's about the exact bytes and staging run, the owner's about the alias
    keys = trusted_keys()
    ap = parse_signed(t2['approval_signed'])
    assert ap['signer'] == 'ana' and verify(ap['statement'], ap['signature'], keys['ana']['public_key'])
    assert (ap['statement']['onnx_sha256'], ap['statement']['staging_run_id'], ap['statement']['decision']) == (
        reg.sha, runs[2], 'approved')
    ch = parse_signed(reg.client.get_registered_model(reg.name).tags['signed_champion'])
    assert ch['signer'] == 'olu' and ch['statement']['version'] == '2' and ch['statement']['onnx_sha256'] == reg.sha
    assert verify(ch['statement'], ch['signature'], keys['olu']['public_key'])
    # the audit store: who, when, why, which staging run, and the signature on the decision
    rec = audit_records(version=2, action='approve').iloc[0]
    assert (rec.actor, rec.role, rec.note, rec.staging_run_id, rec.simulated) == ('ana', 'qa', 'dusk recall fixed', runs[2], False)
    assert rec.signer == 'ana' and rec.signature == ap['signature'] and rec.extra['statement'] == ap['statement']
    assert audit_records(version=1, action='approve').iloc[0].simulated
    rel = audit_records(action='release')
    assert rel[['alias', 'from_version', 'to_version', 'actor', 'role']].values.tolist() == [
        ['champion', None, '1', 'olu', 'owner'], ['champion', '1', '2', 'olu', 'owner'], ['previous', None, '1', 'olu', 'owner']]
    assert rel.note.tolist() == ['first model', 'better at dusk', 'better at dusk'] and rel.staging_run_id.iloc[1] == runs[2]
    # every governing request: its intent before the registry changed, its outcome after
    out = audit_records(action='outcome')
    assert len(out) == 4 and set(out.extra.map(lambda e: e['result'])) == {'done'}
    assert set(out.extra.map(lambda e: e['request'])) == set(audit_records().extra.map(lambda e: e['request']))
    # MLflow alone shows the moves too
    h2 = json.loads(t2['alias_history'])
    assert [(m['alias'], m['from'], m['to'], m['by'], m['note']) for m in h2] == [('champion', '1', '2', 'olu', 'better at dusk')]
    last = json.loads(reg.client.get_registered_model(reg.name).tags['last_alias_move'])
    assert [(m['alias'], m['to'], m['action']) for m in last] == [('champion', '2', 'release'), ('previous', '1', 'release')]

def test_typed_identities_and_roles_that_may_not_act_are_refused_with_nothing_written(reg):
    QA, OWNER, VIEWER = people(reg)
    reg(1); approve(1, QA)
    for who, call in [(VIEWER, lambda w: approve(1, w)), (VIEWER, lambda w: release(1, w)), (QA, lambda w: release(1, w)),
                      (OWNER, lambda w: approve(1, w)), (OWNER, lambda w: reject(1, w, 'no')), (QA, lambda w: rollback(w, 'why')),
                      (VIEWER, lambda w: retrain_requested(w, 'drift')), (QA, lambda w: set_challenger(1, w))]:
        with pytest.raises(PermissionError, match=f"{who.name} has role '{who.role}', which may not") as e: call(who)
        assert not isinstance(e.value, Refused)
    for typed in (Actor('mallory', 'qa'), Actor('ana', 'qa'), Actor('bea', 'qa', simulated=True)):   # no proof
        with pytest.raises(PermissionError, match='has not proved who they are'): approve(1, typed)
    with pytest.raises(PermissionError, match='has not proved who they are'): release(1, Actor('olu', 'owner'))
    with pytest.raises(PermissionError, match='only a person may release'): release(1, STAGING_ACTOR)
    assert "vic has role 'viewer'" in explain_action('approve', 1, VIEWER)
    assert audit_records().action.tolist() == ['approve', 'outcome'] and 'champion' not in aliases(reg)
    with pytest.raises(ValueError, match='unknown role'): Actor('eve', 'admin')

def test_approval_tags_edited_by_hand_or_changed_bytes_do_not_let_a_release_through(reg):
    QA, OWNER, _ = people(reg)
    run = reg(1)
    for k, v in dict(approval_status='approved', approved_by='ana', approval_staging_run=run).items():   # mlflow ui
        reg.client.set_model_version_tag(reg.name, '1', k, v)
    assert 'was not approved' not in explain_action('release', 1, OWNER)   # the tags look right...
    with pytest.raises(Refused, match='the audit store holds no QA decision on version 1'): release(1, OWNER)   # ...no proof
    reg.client.set_model_version_tag(reg.name, '1', 'staging_onnx_sha256', 'ab' * 32)   # other bytes than the registry's
    with pytest.raises(Refused, match='the ONNX bytes of version 1 changed since staging tested them'): approve(1, QA)
    reg(1); approve(1, QA, 'report read')
    write_trusted_keys({n: k for n, k in trusted_keys().items() if n != 'ana'})   # the park no longer trusts ana's key
    with pytest.raises(Refused, match="no valid signed QA approval of version 1.*'ana' is not in the park's trusted keys"):
        release(1, OWNER)
    with pytest.raises(Refused, match="the park cannot verify ana's signature, so nothing was done"): approve(1, QA)
    assert 'champion' not in aliases(reg) and len(audit_records(action='approve')) == 1

def test_reject_needs_a_note_clears_the_approval_and_blocks_release(reg):
    QA, OWNER, _ = people(reg)
    reg(1); reg(2, 'failed', 'p95 latency 310 ms > 250 ms')
    approve(1, QA, 'looked fine')
    with pytest.raises(Refused, match='a rejection must say why'): reject(1, QA, '  ')
    reject(1, reg.who['bea'], 'blurry night frames misread')
    t = tags(reg, 1)
    assert t['approval_status'] == 'rejected' and t['rejected_by'] == 'bea' and 'approved_by' not in t
    assert parse_signed(t['approval_signed'])['statement']['decision'] == 'rejected'
    with pytest.raises(Refused, match=r'version 1 was rejected by QA \(bea: blurry night frames misread\)'): release(1, OWNER)
    reg.client.set_model_version_tag(reg.name, '1', 'approval_status', 'approved')   # undone by hand in MLflow
    with pytest.raises(Refused, match="QA's last decision on version 1 is a rejection"): release(1, OWNER)
    reject(2, QA, 'too slow')  # a failed version may be rejected
    assert audit_records(action='reject').version.tolist() == ['1', '2']

def test_rollback_walks_back_through_releases_and_is_signed_and_recorded(reg):
    QA, OWNER, _ = people(reg)
    for v in (1, 2, 3): reg(v); approve(v, QA); release(v, OWNER, f"v{v}")
    assert aliases(reg) == {'champion': '3', 'previous': '2'}
    with pytest.raises(Refused, match='a rollback must say why'): rollback(OWNER, '')
    assert 'alias champion: 3 -> 2' in explain_action('rollback', None, OWNER, 'cats missed')
    rollback(OWNER, 'cats missed at dusk')
    assert aliases(reg) == {'champion': '2', 'previous': '1'}
    st = parse_signed(reg.client.get_registered_model(reg.name).tags['signed_champion'])['statement']
    assert (st['action'], st['version']) == ('rollback', '2')
    rollback(OWNER, 'still worse')
    assert aliases(reg) == {'champion': '1'}
    with pytest.raises(Refused, match='no previous champion'): rollback(OWNER, 'again')
    rb = audit_records(action='rollback')
    assert rb[['alias', 'from_version', 'to_version', 'note']].values.tolist() == [
        ['champion', '3', '2', 'cats missed at dusk'], ['previous', '2', '1', 'cats missed at dusk'],
        ['champion', '2', '1', 'still worse'], ['previous', '1', None, 'still worse']]
    release(3, OWNER, 'fixed after all')  # still approved: back to 3, keeping 1 as previous
    assert aliases(reg) == {'champion': '3', 'previous': '1'}

def test_alias_history_lists_every_move_with_who_and_why(reg):
    QA, OWNER, _ = people(reg)
    set_challenger(1)
    reg(1); approve(1, QA); release(1, OWNER, 'first')
    set_challenger(2, OWNER, 'candidate from retraining')
    reg(2); approve(2, QA); release(2, reg.who['pat'], 'second')
    rollback(OWNER, 'alert: cat recall fell')
    h = alias_history()
    assert h[['alias', 'from_version', 'to_version', 'action', 'actor', 'note']].values.tolist() == [
        ['challenger', None, '1', 'alias_set', STAGING_ACTOR.name, None],
        ['champion', None, '1', 'release', 'olu', 'first'],
        ['challenger', '1', '2', 'alias_set', 'olu', 'candidate from retraining'],
        ['champion', '1', '2', 'release', 'pat', 'second'], ['previous', None, '1', 'release', 'pat', 'second'],
        ['champion', '2', '1', 'rollback', 'olu', 'alert: cat recall fell'], ['previous', '1', None, 'rollback', 'olu', 'alert: cat recall fell']]
    assert h.simulated.tolist() == [False, False, False, True, True, False, False] and h.ts.is_monotonic_increasing
    assert alias_history('challenger').to_version.tolist() == ['1', '2']
    assert aliases_at(h.ts.iloc[4]) == {'challenger': '2', 'champion': '2', 'previous': '1'}
    assert aliases_at(h.ts.iloc[-1]) == {'challenger': '2', 'champion': '1'} == {k: v for k, v in aliases(reg).items()}
    assert aliases_at(h.ts.iloc[0] - pd.Timedelta('1s')) == {}
    r = retrain_requested(OWNER, 'cat recall gap 12 points', alert_id='a-42')
    got = audit_records(action='retrain_requested').iloc[0]
    assert got.id == r['id'] and got.extra['alert_id'] == 'a-42' and got.version == '1' and got.note == 'cat recall gap 12 points'

def test_audit_store_is_append_only(reg):
    reg(1); approve(1, people(reg)[0])
    path = get_settings().governance_uri[len('sqlite:///'):]
    with sqlite3.connect(path) as con:
        for sql in ("UPDATE audit SET actor='mallory'", 'DELETE FROM audit'):
            with pytest.raises(sqlite3.IntegrityError, match='append-only'): con.execute(sql)
    assert audit_records(action='approve').actor.tolist() == ['ana']

def cli(reg, *args, user=None, password=None, token=None, check=False):
    env = {k: v for k, v in dict(PARKML_USER=user, PARKML_PASSWORD=password, PARKML_TOKEN=token).items() if v}
    return run_cli(*args, env=env, check=check)

def test_cli_people_prove_who_they_are_and_wrong_credentials_write_nothing(reg):
    reg(1)
    before = (len(audit_records()), dict(tags(reg, 1)))
    r = cli(reg, 'approve', 1, '--by', 'mallory', '--role', 'qa', '--note', 'I can type any name')
    assert r.returncode == 2 and 'unrecognized arguments: --by mallory --role qa' in r.stderr
    for kw, why in [(dict(), 'who is acting?'), (dict(user='ana'), 'no password or token for ana'),
                    (dict(user='ana', password='not-hers'), "wrong password for 'ana'"),
                    (dict(user='mallory', password='anything'), "wrong password for 'mallory'"),
                    (dict(user='ana', token='pkt_forged'), "wrong token for 'ana'")]:
        r = cli(reg, 'approve', 1, '--note', 'x', **kw)
        assert r.returncode == 2 and why in r.stderr and 'Traceback' not in r.stderr, (kw, r.stderr)
    assert (len(audit_records()), dict(tags(reg, 1))) == before   # nothing written anywhere
    r = cli(reg, 'release', 1, user='ana', password=PEOPLE['ana'][1])
    assert r.returncode == 2 and "ana has role 'qa', which may not release" in r.stderr
    r = cli(reg, 'approve', 1, user='vic', password=PEOPLE['vic'][1])
    assert r.returncode == 2 and "vic has role 'viewer', which may not approve" in r.stderr
    r = cli(reg, 'approve', 1, '--note', 'report read', user='ana', password=PEOPLE['ana'][1], check=True)
    assert 'signed: approval of ONNX sha256 ' + reg.sha in r.stdout
    r = cli(reg, 'release', 1, '--dry-run', user='olu', password=PEOPLE['olu'][1], check=True)
    assert 'allowed' in r.stdout and 'champion' not in aliases(reg)
    cli(reg, 'release', 1, user='olu', password=PEOPLE['olu'][1], check=True)
    assert aliases(reg) == {'champion': '1'} and audit_records(action='release').actor.tolist() == ['olu']

def test_cli_tokens_lockout_and_user_administration(reg):
    reg(1); reg(2)
    r = cli(reg, 'users', 'token', 'ana', '--label', 'ci', user='ana', password=PEOPLE['ana'][1], check=True)
    token = r.stdout.strip().splitlines()[-1]
    assert token.startswith('pkt_') and token not in Path(str(get_settings().users_file)).read_text()
    cli(reg, 'approve', 1, '--note', 'from a script', user='ana', token=token, check=True)
    assert audit_records(action='approve').actor.tolist() == ['ana']
    r = cli(reg, 'users', 'token', 'olu', user='ana', password=PEOPLE['ana'][1])
    assert r.returncode == 2 and "only olu or an owner makes olu's tokens" in r.stderr
    r = cli(reg, 'users', 'add', 'eve', '--role', 'owner', user='ana', password=PEOPLE['ana'][1])
    assert r.returncode == 2 and 'only an owner adds or changes users' in r.stderr
    r = run_cli('users', 'add', 'eve', '--role', 'owner', env=dict(PARKML_NEW_PASSWORD='eve-secret-1'))
    assert r.returncode == 2 and 'who is acting?' in r.stderr and 'eve' not in trusted_keys()
    r = run_cli('users', 'add', 'eve', '--role', 'qa', env=dict(PARKML_NEW_PASSWORD='eve-secret-1', PARKML_USER='olu',
                                                                   PARKML_PASSWORD=PEOPLE['olu'][1]), check=True)
    assert 'eve' in trusted_keys() and trusted_keys()['eve']['role'] == 'qa'
    for _ in range(int(get_settings().lockout_after)): cli(reg, 'approve', 2, user='bea', password='guess')
    r = cli(reg, 'approve', 2, user='bea', password=PEOPLE['bea'][1])
    assert r.returncode == 2 and 'bea is locked out' in r.stderr and audit_records(version=2).empty

def test_cli_history_audit_log_and_rollback(reg):
    QA, OWNER, _ = people(reg)
    for v in (1, 2): reg(v); approve(v, QA, 'report read'); release(v, OWNER)
    r = cli(reg, 'rollback', '--note', 'dusk regression', user='olu', password=PEOPLE['olu'][1], check=True)
    assert 'done: champion -> 1, previous -> (removed)' in r.stdout and aliases(reg) == {'champion': '1'}
    lines = run_cli('history', '--alias', 'champion', check=True).stdout.strip().splitlines()
    assert len(lines) == 4 and 'dusk regression' in lines[-1] and 'rollback' in lines[-1] and 'olu' in lines[1]
    r = run_cli('audit-log', '--version', 'champion', check=True)  # the alias points at 1 again
    assert 'report read' in r.stdout and 'approve' in r.stdout
    r = cli(reg, 'release', 99, user='olu', password=PEOPLE['olu'][1])
    assert r.returncode == 2 and 'no version or alias' in r.stderr

def test_cli_release_and_rollback_of_a_park_alias_leave_the_champion_alone(reg):
    "`--alias champion-park-b`: the park's own canary, previous and signed statement; any other alias is refused"
    QA, OWNER, _ = people(reg)
    for v in (1, 2, 3): reg(v); approve(v, QA, 'report read')
    release(1, OWNER, 'the chain')
    for v in (2, 3): cli(reg, 'release', v, '--alias', 'champion-park-b', '--note', f"canary v{v}", user='olu',
                         password=PEOPLE['olu'][1], check=True)
    assert aliases(reg) == {'champion': '1', 'champion-park-b': '3', 'previous-park-b': '2'}
    st = parse_signed(reg.client.get_registered_model(reg.name).tags['signed_champion-park-b'])['statement']
    assert (st['kind'], st['alias'], st['version'], st['onnx_sha256']) == ('alias', 'champion-park-b', '3', reg.sha)
    champ = parse_signed(reg.client.get_registered_model(reg.name).tags['signed_champion'])['statement']
    assert champ['version'] == '1'
    r = cli(reg, 'rollback', '--alias', 'champion-park-b', '--note', 'slower at night', user='olu',
            password=PEOPLE['olu'][1], check=True)
    assert 'done: champion-park-b -> 2, previous-park-b -> (removed)' in r.stdout, r.stdout
    assert aliases(reg) == {'champion': '1', 'champion-park-b': '2'}
    lines = run_cli('history', '--alias', 'champion-park-b', check=True).stdout.strip().splitlines()
    assert len(lines) == 4 and 'canary v2' in lines[1] and 'slower at night' in lines[-1], lines
    before = len(audit_records())
    r = cli(reg, 'release', 3, '--alias', 'challenger', user='olu', password=PEOPLE['olu'][1])
    assert r.returncode == 2 and "refused: a release moves champion or a park's own champion-<park>" in r.stderr
    assert 'Traceback' not in r.stderr and len(audit_records()) == before
