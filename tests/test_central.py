"""The central plane on real servers: `parkml central up | status | down | reader | backup | restore` against real
PostgreSQL, SeaweedFS and MLflow server processes (tests/central_fixture.py)."""
import json, os, signal, stat, time
from pathlib import Path
import pytest
from conftest import run_cli
from central_fixture import central, plane_up, plane_down, service_auth

KEYS = ('tracking_uri', 'postgres_uri', 's3_endpoint', 'bucket', 's3_access_key_id', 's3_secret_access_key',
        'settings_file', 'servers')

def answering(st): return {k: v['answers'] for k, v in st['servers'].items()}

def status(st) -> tuple:
    r = run_cli('central', 'status', '--json', env=st['env'])
    return r.returncode, json.loads(r.stdout)

def test_status_names_every_server(central):
    rc, st = status(central)
    assert rc == 0 and all(k in st for k in KEYS)
    assert answering(st) == dict(postgres=True, s3=True, mlflow=True)
    assert st['tracking_uri'].startswith('http://127.0.0.1:') and st['postgres_uri'].startswith('postgresql://')
    assert st['s3_access_key_id'] and st['s3_secret_access_key']

def test_settings_file_points_parkml_at_the_servers(central):
    from parkml.config import Settings
    cfg = Settings(central['settings_file'], environ={})
    assert cfg.tracking_uri == central['tracking_uri'] and cfg.s3_endpoint == central['s3_endpoint']
    assert cfg.predlog_uri == cfg.alerts_uri == cfg.governance_uri == central['postgres_uri']
    text = Path(central['settings_file']).read_text()
    assert service_auth(central)[1] not in text and central['s3_secret_access_key'] not in text
    for f in (cfg.central_secrets, cfg.predlog_uri.split('passfile=')[1]): assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    import psycopg
    with psycopg.connect(cfg.predlog_uri) as c: assert c.execute('select current_database()').fetchone()[0] == 'parkml'

def test_no_secret_on_a_command_line(central):
    secrets = [*service_auth(central)[1:], central['s3_secret_access_key']]
    for p in Path('/proc').glob('[0-9]*/cmdline'):
        try: cmd = p.read_bytes().decode(errors='replace')
        except OSError: continue
        assert not any(s in cmd for s in secrets), cmd[:200]

def test_up_is_idempotent(central):
    t0 = time.monotonic()
    r = run_cli('central', 'up', '--json', '--quiet', env=central['env'], check=True)
    again = json.loads(r.stdout)
    assert {k: v['pid'] for k, v in again['servers'].items()} == {k: v['pid'] for k, v in central['servers'].items()}
    print(f"second up: {time.monotonic() - t0:.1f} s")

def test_a_killed_server_is_reported_and_restarted(central):
    pid = central['servers']['s3']['pid']
    os.kill(pid, signal.SIGKILL)
    rc, st = status(central)
    assert rc == 1 and answering(st) == dict(postgres=True, s3=False, mlflow=True)
    human = run_cli('central', 'status', env=central['env'])
    assert human.returncode == 1 and 's3' in human.stdout and 'DOWN' in human.stdout and 'Traceback' not in human.stderr
    r = run_cli('central', 'up', '--json', '--quiet', env=central['env'], check=True)
    st = json.loads(r.stdout)
    assert answering(st) == dict(postgres=True, s3=True, mlflow=True) and st['servers']['s3']['pid'] != pid
    central['servers'] = st['servers']

def rest(st, path, body=None, auth=None, method=None):
    from parkml.plane import mlflow_call
    return mlflow_call(st['tracking_uri'], path, body, auth, method)

def registered_version(st, name: str) -> str:
    "A registered model `name` with one version of a run, created by the service account; the version"
    svc = service_auth(st)
    exp = rest(st, '/api/2.0/mlflow/experiments/create', dict(name=f'exp-{name}'), svc)['experiment_id']
    run = rest(st, '/api/2.0/mlflow/runs/create', dict(experiment_id=exp), svc)['run']['info']['run_id']
    rest(st, '/api/2.0/mlflow/registered-models/create', dict(name=name), svc)
    v = rest(st, '/api/2.0/mlflow/model-versions/create', dict(name=name, source=f'runs:/{run}/model', run_id=run), svc)
    return v['model_version']['version']

def test_a_person_cannot_move_an_alias(central):
    from parkml.plane import MlflowRefused
    v = registered_version(central, 'alias-guard')
    pw = 'a-reader-password-7'
    run_cli('central', 'reader', 'rosa', env={**central['env'], 'PARKML_NEW_PASSWORD': pw}, check=True)
    move = dict(name='alias-guard', alias='champion', version=v)
    with pytest.raises(MlflowRefused) as e: rest(central, '/api/2.0/mlflow/registered-models/alias', move, ('rosa', pw))
    assert e.value.status == 403
    with pytest.raises(MlflowRefused) as e: rest(central, '/api/2.0/mlflow/registered-models/alias', move, ('rosa', 'wrong-password-1'))
    assert e.value.status == 401
    rest(central, '/api/2.0/mlflow/registered-models/alias', move, service_auth(central))
    got = rest(central, '/api/2.0/mlflow/registered-models/alias', dict(name='alias-guard', alias='champion'),
               ('rosa', pw), method='GET')   # people read everything
    assert got['model_version']['version'] == v

def test_a_plane_never_started_is_one_line(tmp_path):
    r = run_cli('central', 'status', env=dict(PARKML_CENTRAL_DIR=str(tmp_path/'none')))
    assert r.returncode == 2 and r.stderr.count('\n') == 1 and 'central_dir' in r.stderr and 'Traceback' not in r.stderr

def s3_keys(st, bucket=None) -> list:
    "Keys of the plane's bucket, listed with the operator's S3 keys from `status`"
    import boto3
    c = boto3.client('s3', endpoint_url=st['s3_endpoint'], aws_access_key_id=st['s3_access_key_id'],
                     aws_secret_access_key=st['s3_secret_access_key'], region_name='us-east-1')
    return [o['Key'] for p in c.get_paginator('list_objects_v2').paginate(Bucket=bucket or st['bucket'])
            for o in p.get('Contents', [])]

def fill_plane(st) -> dict:
    "A run with an artifact (through MLflow's proxy into the bucket), a version with an alias, a row in parkml's database"
    import psycopg
    from mlflow import MlflowClient
    c = MlflowClient(st['tracking_uri'])
    rid = c.create_run(c.create_experiment('backup-test')).info.run_id
    c.log_text(rid, 'the park at noon', 'notes/noon.txt')
    c.create_registered_model('backup-model')
    v = c.create_model_version('backup-model', f'runs:/{rid}/model', rid).version
    c.set_registered_model_alias('backup-model', 'champion', v)
    with psycopg.connect(st['postgres_uri'], autocommit=True) as db:
        db.execute('create table if not exists backup_probe (note text)')
        db.execute("insert into backup_probe values ('kept')")
    return dict(run=rid, version=v)

def test_backup_then_restore_into_fresh_servers(central, tmp_path, monkeypatch):
    import tempfile, psycopg
    from mlflow import MlflowClient
    user, pw = service_auth(central)
    monkeypatch.setenv('MLFLOW_TRACKING_USERNAME', user)
    monkeypatch.setenv('MLFLOW_TRACKING_PASSWORD', pw)
    made = fill_plane(central)
    assert any(k.endswith('notes/noon.txt') for k in s3_keys(central))   # the artifact went to S3
    bk = tmp_path/'backup'
    run_cli('central', 'backup', bk, env=central['env'], check=True, timeout=300)
    assert {'mlflow.dump', 'mlflow_auth.dump', 'parkml.dump', 'manifest.json', 'bucket'} <= {p.name for p in bk.iterdir()}
    assert stat.S_IMODE(bk.stat().st_mode) == 0o700 and stat.S_IMODE((bk/'mlflow-secrets.env').stat().st_mode) == 0o600
    refused = run_cli('central', 'restore', bk, env=central['env'])
    assert refused.returncode == 2 and 'fresh central_dir' in refused.stderr   # the live plane is not overwritten
    base = Path(tempfile.mkdtemp(prefix='parkml-restore-'))
    base.chmod(0o711)
    env2 = dict(PARKML_CENTRAL_DIR=str(base/'central'))
    try:
        r = run_cli('central', 'restore', bk, env=env2, timeout=300)
        assert r.returncode == 0, r.stderr
        st2 = json.loads(run_cli('central', 'status', '--json', env=env2, check=True).stdout)
        assert answering(st2) == dict(postgres=True, s3=True, mlflow=True) and st2['tracking_uri'] != central['tracking_uri']
        c2 = MlflowClient(st2['tracking_uri'])
        assert c2.get_model_version_by_alias('backup-model', 'champion').version == made['version']
        got = c2.download_artifacts(made['run'], 'notes/noon.txt', str(tmp_path))
        assert Path(got).read_text() == 'the park at noon'
        assert any(k.endswith('notes/noon.txt') for k in s3_keys(st2))
        with psycopg.connect(st2['postgres_uri']) as db:
            assert db.execute('select note from backup_probe').fetchall() == [('kept',)]
    finally:
        run_cli('central', 'down', env=env2, timeout=300)
