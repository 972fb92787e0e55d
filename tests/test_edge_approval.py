"""The edge serves a verified alias only with proofs: real `parkml serve` processes on loopback over the real MLflow
store of the trained model, real users with Ed25519 keys, a trusted keys file. An alias moved by hand, ONNX bytes
changed in the artifact store or in the edge's own cache, and a replayed release statement are refused with the reason;
an alias that is not verified (challenger) serves what it points at and says so."""
import json, os, subprocess, time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse, unquote
import httpx, pytest
from conftest import PARKML, run_cli
from test_service import Server, free_port, register_variant, metric, photos   # noqa: F401 (photos: a fixture)
from parkml.wait import wait_for

PEOPLE = {'olu': ('owner', 'olu-secret-1'), 'ana': ('qa', 'ana-secret-1')}

@pytest.fixture(scope='module')
def people(trained, tmp_path_factory):
    "The park's owner and QA (users file, private keys, trusted keys) in a folder of this module's own"
    from parkml.users import add_user, authenticate
    base = tmp_path_factory.mktemp('edge-people')
    env = dict(PARKML_USERS_FILE=str(base/'users.yaml'), PARKML_KEYS_DIR=str(base/'keys'),
               PARKML_TRUSTED_KEYS=str(base/'trusted_keys.json'),
               PARKML_GOVERNANCE_URI=f"sqlite:///{base}/governance.db")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items(): mp.setenv(k, v)
        add_user('olu', 'owner', PEOPLE['olu'][1])
        add_user('ana', 'qa', PEOPLE['ana'][1], by=authenticate('olu', PEOPLE['olu'][1], env=False))
        yield env

@pytest.fixture
def park(trained, people, tmp_path, monkeypatch):
    """A registered model of this test's own: versions 1 to 3 of the trained graph (its artifact, never altered);
    `park.variant()` registers a version with an ONNX file of its own in the artifact store (safe to alter).
    `park.stage(v)` plays the staging run's part (its tags, the tested ONNX hash included); `park.ship(v)` stages
    `v`, then QA approves and the owner releases it, each signed in with their password."""
    from parkml.config import get_settings
    from parkml.tracking import mlflow_client, registry_sha256
    from parkml.governance import approve, release
    from parkml.users import authenticate
    src = mlflow_client().get_model_version(get_settings().model_name, trained['version'])
    monkeypatch.setenv('PARKML_MODEL_NAME', f"edge-{tmp_path.name}"[:60])
    cfg = get_settings()
    client = mlflow_client(cfg)
    client.create_registered_model(cfg.model_name)
    lineage = {k: v for k, v in src.tags.items() if k.startswith('parkml.')}   # not the trained version's verdicts
    for _ in range(3): client.create_model_version(cfg.model_name, src.source, src.run_id, tags=lineage)
    def stage(v):
        sha = registry_sha256(client.get_model_version(cfg.model_name, str(v)))
        tags = dict(validation_status='passed', staging_run_id=f"run-{v}-{time.time_ns()}", validation_reasons='',
                    staging_onnx_sha256=sha)
        for k, val in tags.items(): client.set_model_version_tag(cfg.model_name, str(v), k, val)
    def ship(v):
        stage(v)
        approve(str(v), authenticate('ana', PEOPLE['ana'][1], env=False), 'staging report read')
        release(str(v), authenticate('olu', PEOPLE['olu'][1], env=False), 'to production')
    # the service reads the trained model's MLflow store, checks the champion's proofs (test_service's Server turns
    # that off for its mechanics tests) and needs one ONNX session only (a quicker start)
    env = dict(PARKML_MODEL_NAME=cfg.model_name, PARKML_TRACKING_URI=str(cfg.tracking_uri),
               PARKML_ARTIFACT_ROOT=str(cfg.artifact_root), PARKML_VERIFIED_ALIASES='champion',
               PARKML_INFER_WORKERS='1', PARKML_SOLO_THREADS='0', **people)
    return SimpleNamespace(cfg=cfg, client=client, name=cfg.model_name, stage=stage, ship=ship, env=env,
                           variant=lambda: str(register_variant(cfg, '1', 0.5)),
                           model_tag=lambda k: client.get_registered_model(cfg.model_name).tags.get(k))

def service_env(park, home: Path, **env) -> dict:
    "The park's settings for a service with a runs folder (fresh cache) and prediction log under `home`"
    return {**park.env, 'PARKML_RUNS': str(home/'runs'), **{k: str(v) for k, v in env.items()}}

def serve(park, home: Path, **env) -> Server:
    "`parkml serve` for the park's model on a free loopback port, its runs folder under `home`"
    return Server(home/'runs', home, **service_env(park, home, **env))

def refused_starts(park, *homes_env) -> list[str]:
    "Run `parkml serve` for each (home, env) at once; each must refuse to start: their output"
    procs = []
    for home, env in homes_env:
        e = {**os.environ, **service_env(park, home, PARKML_PREDLOG_URI=f"sqlite:///{home}/predlog.db", **env)}
        procs.append(subprocess.Popen([PARKML, 'serve', '--host', '127.0.0.1', '--port', str(free_port())], env=e,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=120)[0] for p in procs]
    for p, out in zip(procs, outs): assert p.returncode != 0, out[-3000:]
    return outs

def wait_health(c: httpx.Client, ok, what: str, timeout: float = 30) -> dict:
    "The first /health answer that `ok` accepts; after `timeout`, an error naming `what` and the last answer"
    last = {}
    def accepted():
        last['health'] = h = c.get('/health').json()
        return h if ok(h) else None
    try: return wait_for(accepted, timeout, what)
    except TimeoutError as e: raise AssertionError(f"{e}: {json.dumps(last.get('health'))[:2000]}") from None

def artifact_onnx(mv) -> Path:
    "The ONNX file of version `mv` in the artifact store itself (not a downloaded copy)"
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository
    from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository
    uri = mv.tags['parkml.onnx_uri']
    loc = (ModelsArtifactRepository if uri.startswith('models:/') else RunsArtifactRepository).get_underlying_uri(uri)
    folder = Path(unquote(urlparse(loc).path)) if '://' in loc or loc.startswith('file:') else Path(loc)
    return sorted(folder.rglob('*.onnx'))[0]

def flip_bytes(path: Path) -> str:
    "Change one byte near the end of `path` (a weight, the graph still loads); returns the new sha256"
    from parkml.signing import file_sha256
    b = bytearray(path.read_bytes())
    b[-100] ^= 0x01
    path.write_bytes(bytes(b))
    return file_sha256(path)

def refused(c: httpx.Client) -> float: return metric(c.get('/metrics').text, 'parkml_model_refused')

def test_alias_moved_by_hand_or_replayed_is_refused_and_the_approved_version_served(park, tmp_path, photos):
    park.ship(1)
    signed_v1 = park.model_tag('signed_champion')
    srv = serve(park, tmp_path/'edge')
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            h = c.get('/health').json()
            assert (h['status'], h['model']['version'], h['approval']['refused']) == ('ok', '1', None)
            assert (h['approval']['verified'], h['approval']['approved_by'], h['approval']['released_by']) == (
                True, 'ana', 'olu') and refused(c) == 0
            # a proper release (staged, approved by QA, released by the owner): the edge follows
            park.ship(2)
            h = wait_health(c, lambda h: h['model']['version'] == '2', 'the released version was not picked up')
            assert h['status'] == 'ok' and h['approval']['refused'] is None and h['approval']['verified']
            # a replay: version 1's genuine but older release statement copied back, the alias moved back by hand
            park.client.set_registered_model_tag(park.name, 'signed_champion', signed_v1)
            park.client.set_registered_model_alias(park.name, 'champion', '1')
            h = wait_health(c, lambda h: h['approval']['refused'], 'the replayed statement was not refused')
            assert h['approval']['refused']['version'] == '1' and 'replay' in h['approval']['refused']['reason'], h
            assert h['model']['version'] == '2' and h['status'] == 'degraded' and refused(c) == 1
            # someone with registry access moves champion to version 3 by hand: not staged, approved or released
            park.client.set_registered_model_alias(park.name, 'champion', '3')
            h = wait_health(c, lambda h: (h['approval']['refused'] or {}).get('version') == '3',
                            'the hand move was not refused')
            why = h['approval']['refused']['reason']
            assert 'version 3 has no valid QA approval' in why and 'no signed approval' in why, why
            assert h['status'] == 'degraded' and h['model']['version'] == '2' and refused(c) == 1
            r = c.post('/predict', content=photos[0][0])
            assert r.status_code == 200 and r.json()['model']['version'] == '2'   # still serving the approved one
            # the owner puts it right the proper way: version 3 staged, approved and released; the edge follows
            park.ship(3)
            h = wait_health(c, lambda h: h['model']['version'] == '3', 'the released version was not picked up')
            assert h['status'] == 'ok' and h['approval']['refused'] is None and refused(c) == 0
    finally: srv.stop()
    assert 'which is refused' in srv.text_log() and 'replay' in srv.text_log()   # said in the service's log too

def test_changed_onnx_bytes_in_the_artifact_store_or_the_local_cache_are_refused(park, tmp_path):
    from parkml.config import get_settings
    from parkml.served import load_served
    from parkml.signing import file_sha256
    v = park.variant()   # an ONNX file of its own in the artifact store
    park.ship(v)
    edge = {k[len('PARKML_'):].lower(): val for k, val in service_env(park, tmp_path/'edge').items()}
    m = load_served('champion', get_settings(**edge))   # what the edge does at start: verify, load, keep in its cache
    assert m.version == v and (m.proof['approved_by'], m.proof['released_by']) == ('ana', 'olu')
    approved = m.proof['sha256']
    stored = artifact_onnx(park.client.get_model_version(park.name, v))   # the artifact store's file...
    cached = list((tmp_path/'edge'/'runs'/'cache'/'models').rglob('*.onnx'))   # ...and the edge's copy
    assert file_sha256(stored) == approved and len(cached) == 1 and file_sha256(cached[0]) == approved
    bad_stored, bad_cached = flip_bytes(stored), flip_bytes(cached[0])
    away = dict(PARKML_TRACKING_URI=f"http://127.0.0.1:{free_port()}", MLFLOW_HTTP_REQUEST_MAX_RETRIES=0)
    fresh, offline = refused_starts(park, (tmp_path/'fresh', {}),   # a fresh runs folder: no cache to fall back on
                                    (tmp_path/'edge', away))        # the edge's own cache, the registry out of reach
    assert f"cannot load the model behind alias 'champion' of {park.name}" in fresh, fresh[-3000:]
    assert f"version {v} has no valid QA approval of these ONNX bytes" in fresh
    assert f"onnx_sha256 is {approved!r}, not {bad_stored!r}" in fresh, fresh[-3000:]   # approved hash, loaded hash
    assert f"the cached version is refused too: version {v} has no valid QA approval of these ONNX bytes" in offline
    assert f"onnx_sha256 is {approved!r}, not {bad_cached!r}" in offline, offline[-3000:]
    assert 'Traceback' not in fresh + offline, fresh[-3000:]   # a refusal, said in one message

def test_challenger_is_not_verified_and_serves_an_unapproved_candidate(park, tmp_path, photos):
    park.client.set_registered_model_alias(park.name, 'challenger', '2')   # no staging, no approval
    srv = serve(park, tmp_path/'edge', PARKML_SERVE_ALIAS='challenger')
    try:
        h = httpx.get(srv.url + '/health').json()
        assert (h['status'], h['model']['alias'], h['model']['version']) == ('ok', 'challenger', '2')
        assert h['approval']['verified'] is False and 'not a verified alias' in h['approval']['why']
        assert h['approval']['refused'] is None and 'approved_by' not in h['approval']
        r = httpx.post(srv.url + '/predict', content=photos[0][0], timeout=30)
        assert r.status_code == 200 and r.json()['model']['version'] == '2'
    finally: srv.stop()

def test_a_park_alias_is_served_with_its_own_signed_release_and_a_forged_or_unsigned_one_is_refused(park, tmp_path,
                                                                                                    photos):
    """`parkml release 2 --alias champion-park-b` (the owner, signed in with a password) gives park b a canary with the
    same approval, signature and audit record as the champion; park b's box verifies it (default verified aliases:
    champion, champion-*). The champion's genuine statement copied to park b's alias, or a park alias set by hand
    with no statement at all, is refused with the reason."""
    from parkml.governance import approve, audit_records
    from parkml.users import authenticate
    park.ship(1)
    park.stage(2)
    approve('2', authenticate('ana', PEOPLE['ana'][1], env=False), 'staging report read')
    r = run_cli('release', '2', '--alias', 'champion-park-b', '--note', 'canary for park b', '--user', 'olu',
                env=dict(PARKML_PASSWORD=PEOPLE['olu'][1]))
    assert r.returncode == 0 and 'done: champion-park-b -> 2' in r.stdout, r.stdout + r.stderr
    signed = json.loads(park.model_tag('signed_champion-park-b'))
    assert (signed['signer'], signed['statement']['alias'], signed['statement']['version']) == (
        'olu', 'champion-park-b', '2')
    assert audit_records(alias='champion-park-b')[['action', 'actor', 'to_version']].values.tolist() == [
        ['release', 'olu', '2']]
    assert str(park.client.get_registered_model(park.name).aliases['champion']) == '1'   # the champion did not move
    parks = dict(PARKML_SERVE_ALIAS='champion-park-b', PARKML_VERIFIED_ALIASES='champion, champion-*')
    srv = serve(park, tmp_path/'park-b', **parks)
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            h = c.get('/health').json()
            assert (h['status'], h['model']['alias'], h['model']['version']) == ('ok', 'champion-park-b', '2'), h
            assert (h['approval']['verified'], h['approval']['approved_by'], h['approval']['released_by']) == (
                True, 'ana', 'olu')
            assert c.post('/predict', content=photos[0][0]).json()['model']['version'] == '2'
            # someone with registry access copies the champion's genuine statement to park b and moves its alias
            park.client.set_registered_model_tag(park.name, 'signed_champion-park-b', park.model_tag('signed_champion'))
            park.client.set_registered_model_alias(park.name, 'champion-park-b', '1')
            h = wait_health(c, lambda h: h['approval']['refused'], 'the forged release was not refused')
            why = h['approval']['refused']['reason']
            assert "alias champion-park-b -> 1 was not released by an owner's signed statement" in why, why
            assert "alias is 'champion', not 'champion-park-b'" in why, why
            assert h['status'] == 'degraded' and h['model']['version'] == '2' and refused(c) == 1
    finally: srv.stop()
    park.client.set_registered_model_alias(park.name, 'champion-park-c', '1')   # by hand: nothing signed for park c
    out, = refused_starts(park, (tmp_path/'park-c', dict(parks, PARKML_SERVE_ALIAS='champion-park-c')))
    assert "alias champion-park-c -> 1 was not released by an owner's signed statement: no signed alias" in out, out
    assert 'Traceback' not in out
