"""The tamper-evident audit log on both engines (a SQLite file and a real PostgreSQL database), checked through the
real `parkml audit verify` command: a clean chain, an edited, a deleted and a forged record, a broken signature, a
store from before the chain, and two processes appending at once."""
import base64, json, subprocess, sys
import pytest
from conftest import run_cli, ROOT
from pg_fixture import pg_server, pg_db, store_uri, sql as run_sql  # noqa: F401 (fixtures)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from parkml.auditlog import open_governance, sign_statement, record_hash, AUDIT_COLS, AUDIT_SCHEMA_VERSION

def public_b64(key) -> str:
    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()

def sql(uri, *stmts):
    "Run statements on the store's database directly, as someone with write access to it would"
    for s in stmts: run_sql(uri, *s) if isinstance(s, tuple) else run_sql(uri, s)

def row(uri, rec_id) -> dict: return dict(zip(AUDIT_COLS, run_sql(uri, 'SELECT * FROM audit WHERE id = ?', (rec_id,))[0]))

def drop_triggers(uri):
    "Drop the append-only triggers and the unique index (opening the store, as verify does, puts them back)"
    on = ' ON audit' if uri.startswith('postgresql') else ''
    sql(uri, *(f"DROP TRIGGER IF EXISTS {t}{on}" for t in ('audit_no_update', 'audit_no_delete', 'audit_no_truncate',
                                                           'audit_extends_chain') if on or 'truncate' not in t),
        'DROP INDEX IF EXISTS audit_seq')

def approval(key, signer='ana', version='2'):
    st = dict(model='m', version=version, onnx_sha256='5e' * 32, staging_run_id='r9', verdict='passed', approver=signer)
    return dict(actor=signer, role='qa', action='approve', model='m', version=version, staging_run_id='r9',
                extra={'statement': st}, signer=signer, signature=sign_statement(st, key))

@pytest.fixture
def log(store_uri, tmp_path):
    "A store of five records (a signed approval among them) and a trusted keys file with the QA's key"
    key, db = Ed25519PrivateKey.generate(), store_uri
    (tmp_path/'keys.json').write_text(json.dumps({'keys': {'ana': {'role': 'qa', 'public_key': public_b64(key)}}}))
    with open_governance(db) as st:
        st.append([dict(actor='olu', role='owner', action='alias_set', model='m', version='1', alias='challenger',
                        to_version='1')])
        st.append([approval(key)])
        st.append([dict(actor='olu', role='owner', action='release', model='m', version='2', alias=a, from_version=f,
                        to_version=t, extra={'request': 'q1', 'phase': 'intent'}) for a, f, t in
                   [('champion', '1', '2'), ('previous', None, '1')]])
        st.append([dict(actor='olu', role='owner', action='release', model='m', version='2',
                        extra={'request': 'q1', 'phase': 'outcome', 'result': 'done'})])
    env = dict(PARKML_GOVERNANCE_URI=db, PARKML_TRUSTED_KEYS=str(tmp_path/'keys.json'))
    return dict(db=db, env=env, key=key, tmp=tmp_path)

def verify(log, *extra):
    r = run_cli('audit', 'verify', *extra, env=log['env'], timeout=60)
    assert r.returncode in (0, 1), r.stderr
    return r

def verdict(log) -> dict: return json.loads(verify(log, '--json').stdout)

def test_clean_chain_verifies(log):
    r = verify(log)
    assert r.returncode == 0 and r.stdout.splitlines()[0] == 'OK: 5 records, chain intact, 1 signatures valid', r.stdout
    v = verdict(log)
    assert v['ok'] and v['count'] == 5 and v['first_bad_id'] is None and v['unfinished'] == [] and len(v['head']) == 64
    assert run_cli('audit', '--verify', env=log['env']).returncode == 0
    with open_governance(log['db']) as st:  # a release whose outcome was never written: a warning only
        st.append([dict(actor='olu', role='owner', action='rollback', model='m', version='1', alias='champion',
                        from_version='2', to_version='1', extra={'request': 'q2', 'phase': 'intent'})])
    r = verify(log)
    assert r.returncode == 0 and 'warning: request q2 (rollback, record 6) has an intent but no outcome' in r.stdout
    (log['tmp']/'keys.json').unlink()  # no trusted keys: the chain is checked, the signature reported as not checked
    r = verify(log)
    assert r.returncode == 0 and '0 signatures valid' in r.stdout
    assert '1 signatures not checked: no trusted keys file' in r.stdout

def test_edited_record_is_named(log):
    drop_triggers(log['db'])
    sql(log['db'], "UPDATE audit SET note = 'moved by the owner' WHERE id = 3")
    r = verify(log)
    assert r.returncode == 1
    assert r.stdout.startswith('TAMPERED: record 3 was edited: its hash does not match its content')
    assert verdict(log)['first_bad_id'] == 3

def test_edited_and_rehashed_record_breaks_the_next_link(log):
    drop_triggers(log['db'])
    rec = row(log['db'], 1)
    rec['to_version'] = '9'
    sql(log['db'], ("UPDATE audit SET to_version = '9', hash = ? WHERE id = 1", (record_hash(rec),)))
    v = verdict(log)
    assert not v['ok'] and v['first_bad_id'] == 2 and v['problems'][0].startswith('record 2 does not follow record 1')

def test_deleted_record_is_named_by_the_gap(log):
    drop_triggers(log['db'])
    sql(log['db'], 'DELETE FROM audit WHERE id = 3')
    r = verify(log)
    assert r.returncode == 1 and r.stdout.startswith('TAMPERED: a record between 2 and 4 is missing')
    assert verdict(log)['first_bad_id'] == 4

def test_forged_records_are_caught(log):
    drop_triggers(log['db'])
    rec = row(log['db'], 3)
    forged = {**rec, 'id': 6, 'note': 'also approved', 'ts': rec['ts'] + 1}
    forged['hash'] = record_hash(forged)  # the forger hashes the record correctly, at a position already taken
    cols = ','.join(AUDIT_COLS)
    sql(log['db'], (f"INSERT INTO audit({cols}) VALUES({','.join('?' * len(AUDIT_COLS))})",
                    [forged[c] for c in AUDIT_COLS]))
    r = verify(log)
    assert r.returncode == 1 and r.stdout.startswith("TAMPERED: record 6 was inserted: position 3 is record 3's")
    drop_triggers(log['db'])
    sql(log['db'], 'DELETE FROM audit WHERE id = 6',  # outside the chain, as an old-style row
        "INSERT INTO audit(ts, actor, role, action, model, version) VALUES(1, 'mallory', 'qa', 'approve', 'm', '3')")
    mallory = run_sql(log['db'], "SELECT id FROM audit WHERE actor = 'mallory'")[0][0]  # 7 (SQLite), 6 (PostgreSQL)
    assert verdict(log)['problems'] == [
        f'record {mallory} has no place in the chain (no seq) but was written after it began: it was inserted']

def test_a_forger_cannot_sign(log):
    "A correctly chained approval at the end, signed with a key the park does not trust"
    mallory = Ed25519PrivateKey.generate()
    with open_governance(log['db']) as st: st.append([approval(mallory, signer='mallory', version='3')])
    r = verify(log)
    assert r.returncode == 1
    assert r.stdout.startswith('TAMPERED: record 6 is signed by mallory, who is not among the trusted keys')

def test_edited_statement_fails_its_signature(log):
    with open_governance(log['db']) as st:
        st.append([approval(log['key'], version='3')])  # record 6, the last
    drop_triggers(log['db'])
    rec = row(log['db'], 6)
    extra = json.loads(rec['extra'])
    extra['statement']['onnx_sha256'] = 'ff' * 32  # another model file, hash re-computed: only the signature can tell
    rec['extra'] = json.dumps(extra, sort_keys=True)
    sql(log['db'], ('UPDATE audit SET extra = ?, hash = ? WHERE id = 6', (rec['extra'], record_hash(rec))))
    r = verify(log)
    assert r.returncode == 1
    assert r.stdout.startswith('TAMPERED: record 6 has a signature by ana that does not verify'), r.stdout
    v = verdict(log)
    assert v['first_bad_id'] == 6 and len(v['problems']) == 1 and v['signatures'] == 1

# the audit table as parkml made it before the hash chain (schema version 0)
LEGACY = ("CREATE TABLE audit(id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, actor TEXT NOT NULL, "
          "role TEXT NOT NULL, action TEXT NOT NULL, model TEXT NOT NULL, version TEXT, from_version TEXT, "
          "to_version TEXT, alias TEXT, note TEXT, staging_run_id TEXT, simulated INTEGER NOT NULL DEFAULT 0, "
          "extra TEXT NOT NULL DEFAULT '{}')",
          *(f"CREATE TRIGGER audit_no_{op.lower()} BEFORE {op} ON audit "
            "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END" for op in ('UPDATE', 'DELETE')))

def test_legacy_store_is_migrated_and_verified(tmp_path):
    db = tmp_path/'old.db'
    sql(f"sqlite:///{db}", *LEGACY, *(("INSERT INTO audit(ts, actor, role, action, model, version, extra) VALUES(?, 'ana', 'qa', "
                        "'approve', 'm', ?, '{}')", (1000. + i, str(i))) for i in (1, 2)))
    env = dict(PARKML_GOVERNANCE_URI=f"sqlite:///{db}", PARKML_TRUSTED_KEYS=str(tmp_path/'none.json'))
    r = run_cli('audit', 'verify', env=env)
    assert r.returncode == 0 and r.stdout.startswith('OK: 0 records, chain intact')
    assert '2 legacy records precede the chain' in r.stdout
    assert run_sql(f"sqlite:///{db}", 'PRAGMA user_version') == [(AUDIT_SCHEMA_VERSION,)]
    with open_governance(f"sqlite:///{db}") as st:
        st.append([dict(actor='olu', role='owner', action='release', model='m', version='2', alias='champion',
                        to_version='2')])
        recs = sorted(st.records(), key=lambda r: r['id'])
    assert [(r['id'], r['seq']) for r in recs] == [(1, None), (2, None), (3, 1)] and recs[2]['prev_hash'] == '0' * 64
    r = run_cli('audit', 'verify', '--json', env=env)
    v = json.loads(r.stdout)
    assert r.returncode == 0 and (v['ok'], v['count'], v['legacy']) == (True, 1, 2)
    sql(f"sqlite:///{db}", 'PRAGMA user_version = 7')
    r = run_cli('audit', 'verify', env=env)
    assert r.returncode == 2 and 'schema version 7, newer than' in r.stderr and 'Traceback' not in r.stderr

APPENDER = """
import sys, time
from pathlib import Path
from parkml.auditlog import open_governance
uri, who, n, here = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
st = open_governance(uri)
(here/f"{who}.ready").touch()
while len(list(here.glob('*.ready'))) < 2: time.sleep(0.001)  # both start appending at the same moment
for i in range(n):
    st.append([dict(actor=who, role='owner', action='alert_handled', model='m', note=f"{who} {i}")])
    time.sleep(0.002)  # let the other writer take the lock in between
"""

def test_two_processes_appending_at_once_leave_one_chain(store_uri, tmp_path):
    uri, n = store_uri, 150
    open_governance(uri)
    procs = [subprocess.Popen([sys.executable, '-c', APPENDER, uri, who, str(n), str(tmp_path)], cwd=ROOT)
             for who in 'ab']
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    with open_governance(uri) as st: recs = sorted(st.chain_records(), key=lambda r: r['seq'])
    assert [r['seq'] for r in recs] == list(range(1, 2 * n + 1))
    who = [r['actor'] for r in recs]
    assert sum(a != b for a, b in zip(who, who[1:])) > 2, 'the two writers did not interleave: the test proves nothing'
    r = run_cli('audit', 'verify', env=dict(PARKML_GOVERNANCE_URI=uri, PARKML_TRUSTED_KEYS=str(tmp_path/'k.json')))
    assert r.returncode == 0 and r.stdout.startswith(f"OK: {2 * n} records, chain intact"), r.stdout + r.stderr


def test_store_of_the_previous_release_opens_and_verifies(tmp_path):
    "An audit store written by the code of 8ec4ebb (tests/data/v0: chain, schema version 1) opens, appends, verifies"
    import shutil
    db = shutil.copy(ROOT/'tests'/'data'/'v0'/'governance.db', tmp_path/'governance.db')
    uri = f"sqlite:///{db}"
    before = run_sql(uri, 'SELECT * FROM audit ORDER BY id')
    with open_governance(uri) as st:
        st.append([dict(actor='olu', role='owner', action='rollback', model='m', version='1', alias='champion')])
    assert run_sql(uri, 'SELECT * FROM audit ORDER BY id')[:len(before)] == before and len(before) == 2
    r = run_cli('audit', 'verify', env=dict(PARKML_GOVERNANCE_URI=uri, PARKML_TRUSTED_KEYS=str(tmp_path/'k.json')))
    assert r.returncode == 0 and r.stdout.startswith('OK: 3 records, chain intact'), r.stdout + r.stderr

def test_postgres_guards_refuse_edits_and_come_back(pg_db):
    "On PostgreSQL the triggers refuse UPDATE, DELETE, TRUNCATE and an unchained INSERT; dropped, they return on open"
    import psycopg
    with open_governance(pg_db) as st: st.append([dict(actor='olu', role='owner', action='release', model='m')])
    for stmt, why in [("UPDATE audit SET actor = 'eve'", 'append-only'), ('DELETE FROM audit', 'append-only'),
                      ('TRUNCATE audit', 'append-only'),
                      ("INSERT INTO audit(ts, actor, role, action, model) VALUES(1, 'eve', 'qa', 'approve', 'm')", 'chain')]:
        with pytest.raises(psycopg.Error, match=why): run_sql(pg_db, stmt)
    drop_triggers(pg_db)
    run_sql(pg_db, "UPDATE audit SET note = 'quietly' WHERE id = 1")
    with open_governance(pg_db): pass
    with pytest.raises(psycopg.Error, match='append-only'): run_sql(pg_db, "UPDATE audit SET note = 'again'")
