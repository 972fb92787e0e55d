"""The central plane on real servers: `parkml central up | status | down | reader | backup | restore` against real
PostgreSQL, SeaweedFS and MLflow server processes (tests/central_fixture.py)."""
import json, os, signal, stat, time
from pathlib import Path
import pytest
from conftest import run_cli
from central_fixture import central, plane_up, plane_down, service_auth
from receivers import receiver  # noqa: F401 (fixture)
from parkml.wait import wait_for

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
    for f in (cfg.central_secrets, cfg.predlog_uri.split('passfile=')[1]):
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    import psycopg
    with psycopg.connect(cfg.predlog_uri) as c: assert c.execute('select current_database()').fetchone()[0] == 'parkml'

def test_settings_file_is_a_layer_over_the_project(central, tmp_path):
    "The plane's file holds only what `up` decides; a later edit of the base settings reaches it without another `up`"
    from parkml.config import Settings
    from parkml.plane import write_settings
    text = Path(central['settings_file']).read_text()
    assert 'base_settings = ' in text and 'image_size' not in text and 'predlog_uri = ' in text
    base = tmp_path/'settings.ini'
    base.write_text(Path(Settings(central['settings_file'], environ={}).files[0]).read_text())
    top = write_settings(Settings(base, environ={}), dict(predlog_uri='postgresql://x@127.0.0.1:1/parkml'),
                         tmp_path/'central.ini')
    base.write_text(base.read_text().replace('\nshap_frames = ', '\nshap_frames = 7\n# was: '))
    cfg = Settings(top, environ={})
    assert cfg.shap_frames == 7 and cfg.predlog_uri == 'postgresql://x@127.0.0.1:1/parkml'

def test_each_role_reaches_only_its_own_database(central):
    "MLflow's role and the stores' role are refused by each other's database; neither is a superuser"
    import psycopg
    from parkml.config import get_settings
    from parkml.plane import mlflow_databases
    stores = central['postgres_uri']
    mlflow_uri = mlflow_databases(get_settings(central_dir=central['central_dir'], mlflow_backend_uri=''))[0]
    assert stores.startswith('postgresql://parkml_stores@') and mlflow_uri.startswith('postgresql://mlflow@')
    with psycopg.connect(mlflow_uri) as db:   # MLflow's own tables, as MLflow's role
        assert db.execute('select count(*) from experiments').fetchone()[0] >= 1
        assert db.execute('select rolsuper from pg_roles where rolname = current_user').fetchone()[0] is False
    for who, other in ((stores, 'mlflow'), (stores, 'mlflow_auth'), (mlflow_uri, 'parkml')):
        me, rest_ = who.split('?')
        with pytest.raises(psycopg.OperationalError, match='permission denied for database'):
            psycopg.connect(f"{me.rsplit('/', 1)[0]}/{other}?{rest_}").execute('select count(*) from pg_class')

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
    alias = '/api/2.0/mlflow/registered-models/alias'
    with pytest.raises(MlflowRefused) as e: rest(central, alias, move, ('rosa', pw))
    assert e.value.status == 403
    with pytest.raises(MlflowRefused) as e: rest(central, alias, move, ('rosa', 'wrong-password-1'))
    assert e.value.status == 401
    rest(central, '/api/2.0/mlflow/registered-models/alias', move, service_auth(central))
    got = rest(central, '/api/2.0/mlflow/registered-models/alias', dict(name='alias-guard', alias='champion'),
               ('rosa', pw), method='GET')   # people read everything
    assert got['model_version']['version'] == v

def test_migrate_brings_every_store_to_its_schema(central):
    r = run_cli('central', 'migrate', env=dict(PARKML_SETTINGS=central['settings_file']), timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert sorted(res['stores']) == ['alerts_uri', 'governance_uri', 'predlog_uri'] and res['mlflow_upgraded'] is False
    import psycopg
    with psycopg.connect(central['postgres_uri']) as db:   # each store recorded its schema version on the server
        assert len(db.execute('select store, version from parkml_schema').fetchall()) >= 3

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
    "A run with an artifact (through MLflow's proxy to the bucket), a version with an alias, rows in parkml's database"
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
    from parkml.predlog import open_store
    with open_store() as log:   # the plane's prediction log (PostgreSQL) and frame store (S3)
        pid = log.log_prediction(dict(ts=time.time(), camera='cam-01', model_name='backup-model', model_version=v,
                                      run_id=rid, alias='champion', label='dog', p_dog=.9, latency_ms=10., width=640,
                                      height=480, brightness=.5, contrast=.2, sharpness=.1, frame=b'a frame at noon'))
    return dict(run=rid, version=v, prediction=pid)

def test_backup_then_restore_into_fresh_servers(central, tmp_path, monkeypatch):
    import tempfile, psycopg
    from mlflow import MlflowClient
    user, pw = service_auth(central)
    monkeypatch.setenv('MLFLOW_TRACKING_USERNAME', user)
    monkeypatch.setenv('MLFLOW_TRACKING_PASSWORD', pw)
    monkeypatch.setenv('PARKML_SETTINGS', central['settings_file'])
    made = fill_plane(central)
    assert any(k.endswith('notes/noon.txt') for k in s3_keys(central))   # the artifact went to S3
    bk = tmp_path/'backup'
    run_cli('central', 'backup', bk, env=central['env'], check=True, timeout=300)
    wanted = {'mlflow.dump', 'mlflow_auth.dump', 'parkml.dump', 'manifest.json', 'bucket'}
    assert wanted <= {p.name for p in bk.iterdir()}
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
        assert answering(st2) == dict(postgres=True, s3=True, mlflow=True)
        assert st2['tracking_uri'] != central['tracking_uri']
        c2 = MlflowClient(st2['tracking_uri'])
        assert c2.get_model_version_by_alias('backup-model', 'champion').version == made['version']
        got = c2.download_artifacts(made['run'], 'notes/noon.txt', str(tmp_path))
        assert Path(got).read_text() == 'the park at noon'
        assert any(k.endswith('notes/noon.txt') for k in s3_keys(st2))
        with psycopg.connect(st2['postgres_uri']) as db:
            assert db.execute('select note from backup_probe').fetchall() == [('kept',)]
        t = run_cli('trace', made['prediction'], '--json', env=dict(PARKML_SETTINGS=st2['settings_file']))
        assert t.returncode == 0, t.stderr
        traced = json.loads(t.stdout)   # the restored log, and the restored registry behind it
        assert traced['prediction_id'] == made['prediction'] and traced['model']['run_id'] == made['run']
    finally:
        run_cli('central', 'down', env=env2, timeout=300)

# ---------------------------------------------------------------------------------------------------------------------
# The whole chain on the central plane: every command with the plane's settings file, checked against the servers.

QA = dict(PARKML_USER='qa-anna', PARKML_PASSWORD='anna-secret-1')
OWNER = dict(PARKML_USER='owner-olaf', PARKML_PASSWORD='olaf-secret-1')

@pytest.fixture(scope='module')
def chain(central, tmp_path_factory):
    "Environment of a park whose every store is on the central plane (its own model name), with a QA and an owner"
    from parkml.users import add_user, authenticate
    base = tmp_path_factory.mktemp('central-chain')
    env = dict(PARKML_SETTINGS=central['settings_file'], PARKML_RUNS=str(base/'runs'),
               PARKML_MODEL_NAME='central-catdog', PARKML_USERS_FILE=str(base/'users.yaml'),
               PARKML_KEYS_DIR=str(base/'keys'),
               PARKML_TRUSTED_KEYS=str(base/'trusted_keys.json'))
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items(): mp.setenv(k, v)
        add_user(OWNER['PARKML_USER'], 'owner', OWNER['PARKML_PASSWORD'])
        owner = authenticate(OWNER['PARKML_USER'], OWNER['PARKML_PASSWORD'], env=False)
        add_user(QA['PARKML_USER'], 'qa', QA['PARKML_PASSWORD'], by=owner)
    return dict(env=env, base=base)

def sql(st, query, *params):
    import psycopg
    with psycopg.connect(st['postgres_uri']) as db: return db.execute(query, params).fetchall()

def serve(chain, port) -> 'subprocess.Popen':
    import subprocess, sys, httpx
    from conftest import PARKML, ROOT
    p = subprocess.Popen([PARKML, 'serve', '--port', str(port)], env={**os.environ, **chain['env']}, cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=open(chain['base']/'serve.log', 'wb'))
    try: wait_for(lambda: httpx.get(f'http://127.0.0.1:{port}/health', timeout=2).status_code == 200, 300,
                  f'parkml serve on port {port} answering /health', every=0.5, catch=httpx.HTTPError)
    except TimeoutError as e:
        p.kill()
        raise AssertionError(f"{e}\n{(chain['base']/'serve.log').read_text()[-3000:]}") from None
    return p

def test_the_chain_on_the_central_plane(central, chain, manifest, data_root, receiver):
    import httpx, sys
    from parkml.central import free_port
    sys.path.insert(0, str(Path(__file__).parent))
    from test_staging import QUICK, lenient_env
    env, svc = chain['env'], service_auth(central)
    run_cli('train', '--limit', '60', '--quiet', env=env, check=True, timeout=1800)
    versions = rest(central, '/api/2.0/mlflow/registered-models/get', dict(name='central-catdog'), svc, method='GET')
    assert versions['registered_model']['name'] == 'central-catdog'
    r = run_cli('stage', '1', *QUICK, '--quiet', env={**env, **lenient_env()}, timeout=1800)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    run_cli('approve', '1', env={**env, **QA}, check=True)
    run_cli('release', '1', env={**env, **OWNER}, check=True)
    champ = rest(central, '/api/2.0/mlflow/registered-models/alias', dict(name='central-catdog', alias='champion'),
                 svc, method='GET')
    assert champ['model_version']['version'] == '1'   # the alias moved on the server
    port = free_port()
    p = serve(chain, port)
    try:
        photos = [data_root/f for f in manifest[manifest.split == 'test'].path[:1000]]
        ids = []
        with httpx.Client(base_url=f'http://127.0.0.1:{port}', timeout=60) as http:
            for i in range(0, 1000, 25):
                files = [('files', (f.name, f.read_bytes(), 'image/jpeg')) for f in photos[i:i + 25]]
                res = http.post('/predict/batch', files=files, params=dict(camera=f'cam-0{1 + i // 500}'))
                assert res.status_code == 200, res.text
                assert res.json()['n_ok'] == 25
                ids += [x['prediction_id'] for x in res.json()['results']]
            truth = dict(zip(ids, manifest[manifest.split == 'test'].label[:1000]))
            for pid in ids[:200]:
                assert http.post('/feedback', json=dict(prediction_id=pid, label=truth[pid])).status_code == 200
    finally: p.terminate()
    ours = "p.model_name = 'central-catdog' and p.model_version = '1'"
    assert sql(central, f"select count(*) from predictions p where {ours}")[0][0] == 1000
    labelled = f"select count(*) from feedback f join predictions p on p.id = f.prediction_id where {ours}"
    assert sql(central, labelled)[0][0] == 200
    assert len([k for k in s3_keys(central) if k.startswith('frames/')]) >= 900   # the frames, in S3
    day = time.strftime('%Y-%m-%d', time.gmtime())
    hook = dict(PARKML_ALERT_WEBHOOK_URL=receiver.url, PARKML_ALERT_SEND_SEVERITY='info')   # every alert is sent
    r = run_cli('analyze', '--day', day, '--set', 'shap_frames=2', '--set', 'shap_max_evals=40', '--quiet',
                env={**env, **hook}, timeout=1800)
    assert r.returncode in (0, 1), r.stdout[-2000:] + r.stderr[-2000:]
    run_id = r.stdout.split('MLflow run ')[1].split()[0]
    stored = {a for (a,) in sql(central, "select id from alerts where day = %s and model_version = '1'", day)}
    assert stored, 'the day raised no alert in the central alert store'
    assert {a['id'] for a in receiver.got} == stored   # each reached the webhook receiver on loopback, once
    sent = sql(central, "select count(*) from alert_outbox where channel = 'webhook' and delivered is not null "
                        "and alert_id = any(%s)", list(stored))[0][0]
    assert sent == len(stored)   # and the central outbox records the delivery
    run = rest(central, '/api/2.0/mlflow/runs/get', dict(run_id=run_id), svc, method='GET')['run']
    assert any(k.startswith(f"mlartifacts/{run['info']['experiment_id']}/{run_id}/") for k in s3_keys(central))
    t = run_cli('trace', ids[0], '--json', env=env, check=True)
    traced = json.loads(t.stdout)
    assert traced['prediction_id'] == ids[0] and traced['model_version'] == '1' and traced['feedback']
    again = json.loads(run_cli('trace', ids[0], '--json', env=env, check=True).stdout)
    assert (traced['model_facts_from'], again['model_facts_from']) == ('mlflow', 'snapshot')   # keyed by one REST call
    tag = dict(name='central-catdog', version='1', key='note', value='read by the trace')
    rest(central, '/api/2.0/mlflow/model-versions/set-tag', tag, svc)   # a change on the server: the snapshot is stale
    assert json.loads(run_cli('trace', ids[0], '--json', env=env, check=True).stdout)['model_facts_from'] == 'mlflow'
    a = run_cli('audit', '1', '--out', chain['base']/'audit', env=env)
    assert a.returncode == 0, a.stdout[-2000:] + a.stderr[-2000:]
    assert {r[0] for r in sql(central, 'select action from audit')} >= {'approve', 'release'}
