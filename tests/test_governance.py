"Approval, release and rollback on a real MLflow registry: roles, refusals with reasons, alias moves, audit records, the CLI."
import json, re, sqlite3, time
from datetime import datetime
import pandas as pd, pytest
from conftest import run_cli

from parkml.config import get_settings
from parkml.tracking import mlflow_client, resolve_version
from parkml.governance import (Actor, Refused, approve, reject, release, rollback, set_challenger, retrain_requested,
                               explain_action, audit_records, alias_history, aliases_at, open_governance, STAGING_ACTOR)

QA, OWNER, VIEWER = Actor('ana', 'qa'), Actor('olu', 'owner'), Actor('vic', 'viewer')

@pytest.fixture
def reg(trained, tmp_path, monkeypatch):
    """A registered model of this test's own with four versions of the trained model (same run, same ONNX graph),
    and a fresh audit store. Returns a helper that plays the staging run's part by setting its tags."""
    src = mlflow_client().get_model_version(get_settings().model_name, trained['version'])
    monkeypatch.setenv('PARKML_MODEL_NAME', f"gov-{tmp_path.name}")
    monkeypatch.setenv('PARKML_GOVERNANCE_URI', f"sqlite:///{tmp_path}/governance.db")
    cfg = get_settings(); client = mlflow_client(cfg)
    client.create_registered_model(cfg.model_name)
    for _ in range(4): client.create_model_version(cfg.model_name, src.source, src.run_id, tags=src.tags)
    def stage(v, status='passed', why=''):
        tags = dict(validation_status=status, staging_run_id=f"run-{v}-{time.time_ns()}", validation_reasons=why)
        for k, val in tags.items(): client.set_model_version_tag(cfg.model_name, str(v), k, val)
        return tags['staging_run_id']
    stage.client, stage.name = client, cfg.model_name
    return stage

def aliases(reg): return {a: str(v) for a, v in reg.client.get_registered_model(reg.name).aliases.items()}
def tags(reg, v): return reg.client.get_model_version(reg.name, str(v)).tags

def test_release_refuses_unapproved_failed_and_unstaged_versions_with_reasons(reg):
    reg(1); reg(2, 'failed', 'recall gap 14.2 points > 5 points (cats missed)')
    assert tags(reg, 3)['validation_status'] == 'pending'
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

def test_approve_then_release_moves_champion_keeps_previous_and_records_everything(reg):
    runs = {v: reg(v) for v in (1, 2)}
    t0 = time.time()
    approve(1, Actor('demo-qa', 'qa', simulated=True), 'simulated approval'); release(1, OWNER, 'first model')
    assert aliases(reg) == {'champion': '1'}
    approve('2', QA, 'dusk recall fixed')
    print(explain_action('release', 2, OWNER))
    assert 'alias champion: 1 -> 2' in explain_action('release', 2, OWNER)
    recs = release(2, OWNER, 'better at dusk')
    assert aliases(reg) == {'champion': '2', 'previous': '1'} and str(resolve_version('champion').version) == '2'
    assert [(r['alias'], r['from_version'], r['to_version']) for r in recs] == [('champion', '1', '2'), ('previous', None, '1')]
    t1, t2 = tags(reg, 1), tags(reg, 2)
    assert t2['approval_status'] == 'approved' and t2['approved_by'] == 'ana' and t2['approval_note'] == 'dusk recall fixed'
    assert t2['approval_simulated'] == 'false' and t1['approval_simulated'] == 'true' and t2['approval_staging_run'] == runs[2]
    assert t0 - 1 <= datetime.fromisoformat(t2['approval_time']).timestamp() <= time.time() + 1
    # the audit store: who, when, why, which staging run
    ap = audit_records(version=2, action='approve').iloc[0]
    assert (ap.actor, ap.role, ap.note, ap.staging_run_id, ap.simulated) == ('ana', 'qa', 'dusk recall fixed', runs[2], False)
    assert audit_records(version=1, action='approve').iloc[0].simulated
    rel = audit_records(action='release')
    assert rel[['alias', 'from_version', 'to_version', 'actor', 'role']].values.tolist() == [
        ['champion', None, '1', 'olu', 'owner'], ['champion', '1', '2', 'olu', 'owner'], ['previous', None, '1', 'olu', 'owner']]
    assert rel.note.tolist() == ['first model', 'better at dusk', 'better at dusk'] and rel.staging_run_id.iloc[1] == runs[2]
    # MLflow alone shows the moves too
    h2 = json.loads(t2['alias_history'])
    assert [(m['alias'], m['from'], m['to'], m['by'], m['note']) for m in h2] == [('champion', '1', '2', 'olu', 'better at dusk')]
    assert [(m['alias'], m['to']) for m in json.loads(t1['alias_history'])] == [('champion', '1'), ('champion', '2'), ('previous', '1')]
    last = json.loads(reg.client.get_registered_model(reg.name).tags['last_alias_move'])
    assert [(m['alias'], m['to'], m['action']) for m in last] == [('champion', '2', 'release'), ('previous', '1', 'release')]

def test_roles_that_may_not_act_are_refused_with_the_reason(reg):
    reg(1); approve(1, QA)
    for who, call in [(VIEWER, lambda w: approve(1, w)), (VIEWER, lambda w: release(1, w)), (QA, lambda w: release(1, w)),
                      (OWNER, lambda w: approve(1, w)), (OWNER, lambda w: reject(1, w, 'no')), (QA, lambda w: rollback(w, 'why')),
                      (VIEWER, lambda w: retrain_requested(w, 'drift')), (QA, lambda w: set_challenger(1, w))]:
        with pytest.raises(PermissionError, match=f"{who.name} has role '{who.role}', which may not") as e: call(who)
        assert not isinstance(e.value, Refused)
    assert "vic has role 'viewer'" in explain_action('approve', 1, VIEWER)
    assert len(audit_records()) == 1 and 'champion' not in aliases(reg)
    with pytest.raises(ValueError, match='unknown role'): Actor('eve', 'admin')
    with pytest.raises(ValueError, match='non-empty name'): Actor(' ', 'qa')

def test_reject_needs_a_note_clears_the_approval_and_blocks_release(reg):
    reg(1); reg(2, 'failed', 'p95 latency 310 ms > 250 ms')
    approve(1, QA, 'looked fine')
    with pytest.raises(Refused, match='a rejection must say why'): reject(1, QA, '  ')
    reject(1, Actor('bea', 'qa'), 'blurry night frames misread')
    t = tags(reg, 1)
    assert t['approval_status'] == 'rejected' and t['rejected_by'] == 'bea' and 'approved_by' not in t
    with pytest.raises(Refused, match=r'version 1 was rejected by QA \(bea: blurry night frames misread\)'): release(1, OWNER)
    reject(2, QA, 'too slow')  # a failed version may be rejected
    assert audit_records(action='reject').version.tolist() == ['1', '2']

def test_rollback_walks_back_through_releases_and_is_recorded(reg):
    for v in (1, 2, 3): reg(v); approve(v, QA); release(v, OWNER, f"v{v}")
    assert aliases(reg) == {'champion': '3', 'previous': '2'}
    with pytest.raises(Refused, match='a rollback must say why'): rollback(OWNER, '')
    assert 'alias champion: 3 -> 2' in explain_action('rollback', None, OWNER, 'cats missed')
    rollback(OWNER, 'cats missed at dusk')
    assert aliases(reg) == {'champion': '2', 'previous': '1'}
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
    set_challenger(1)
    reg(1); approve(1, QA); release(1, OWNER, 'first')
    set_challenger(2, OWNER, 'candidate from retraining')
    reg(2); approve(2, QA); release(2, Actor('pat', 'owner', simulated=True), 'second')
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
    # an alert's retraining request: owner only, linked to the alert, the champion of the moment recorded
    r = retrain_requested(OWNER, 'cat recall gap 12 points', alert_id='a-42')
    got = audit_records(action='retrain_requested').iloc[0]
    assert got.id == r['id'] and got.extra['alert_id'] == 'a-42' and got.version == '1' and got.note == 'cat recall gap 12 points'

def test_audit_store_is_append_only(reg):
    reg(1); approve(1, QA)
    path = get_settings().governance_uri[len('sqlite:///'):]
    with sqlite3.connect(path) as con:
        for sql in ("UPDATE audit SET actor='mallory'", 'DELETE FROM audit'):
            with pytest.raises(sqlite3.IntegrityError, match='append-only'): con.execute(sql)
    assert audit_records().actor.tolist() == ['ana']
    with pytest.raises(NotImplementedError, match='supported: sqlite://'): open_governance('postgresql://db/governance')

def test_cli_approve_release_rollback_history_and_refusals(reg):
    reg(1); reg(2); reg(3, 'failed', 'recall gap 14.2 points')
    r = run_cli('release', 1, '--by', 'olu')
    assert r.returncode == 2 and 'refused: version 1 was not approved by QA' in r.stderr and 'alias champion: (none) -> 1' in r.stdout
    r = run_cli('approve', 1, '--by', 'vic', '--role', 'viewer', '--note', 'ok')
    assert r.returncode == 2 and "vic has role 'viewer', which may not approve" in r.stderr
    run_cli('approve', 1, '--by', 'ana', '--note', 'report read', check=True)
    r = run_cli('release', 1, '--by', 'olu', '--dry-run', check=True)
    assert 'allowed' in r.stdout and 'champion' not in aliases(reg)
    run_cli('release', 1, '--by', 'olu', check=True)
    approve(2, QA); release(2, OWNER)
    r = run_cli('approve', 3, '--by', 'ana')
    assert r.returncode == 2 and 'version 3 failed staging: recall gap 14.2 points' in r.stderr
    r = run_cli('rollback', '--by', 'olu', '--note', 'dusk regression', check=True)
    assert 'done: champion -> 1, previous -> (removed)' in r.stdout and aliases(reg) == {'champion': '1'}
    r = run_cli('history', '--alias', 'champion', check=True)
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 4 and 'dusk regression' in lines[-1] and 'rollback' in lines[-1] and 'olu' in lines[1]
    r = run_cli('audit-log', '--version', 'champion', check=True)  # the alias points at 1 again
    assert 'report read' in r.stdout and 'approve' in r.stdout and r.stdout.count('champion') == 3
    r = run_cli('reject', 1, '--by', 'ana')
    assert r.returncode == 2 and '--note' in r.stderr
    r = run_cli('release', 99, '--by', 'olu')
    assert r.returncode == 2 and 'no version or alias' in r.stderr
