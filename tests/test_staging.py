"""Staging (parkml.staging, `parkml stage`): the real edge service on loopback, real staging photos over HTTP, gates
from settings.ini judged by MLflow's validation, the verdict on the version, and release refusing what failed."""
import json, os, subprocess, sys, time
from pathlib import Path
import numpy as np, pandas as pd, pytest, httpx
from conftest import run_cli

QUICK = ['--sample', '80', '--robust-sample', '12', '--dusk-sample', '40', '--shap-errors', '1']   # 80 clean staging images; 40 at dusk, 12 per other condition
SMALL = dict(sample=80, robust_sample=4, dusk_sample=4, shap_errors=0, progress=False)   # the same, smaller, for library-level runs

def tags_of(version):
    from parkml.config import get_settings
    from parkml.tracking import mlflow_client
    cfg = get_settings()
    return mlflow_client(cfg).get_model_version(cfg.model_name, str(version)).tags

def summary_of(out: str) -> dict:
    line = next(l for l in out.splitlines() if l.startswith('summary: '))
    return json.loads(Path(line[len('summary: '):]).read_text())

def lenient_env(**strict) -> dict:
    "Gates a small model trained on 120 images clears, except the ones given"
    loose = dict(STAGE_FAIRNESS_EXTRA=40, STAGE_LATENCY_FRAMES=30, STAGE_MIN_ACCURACY=0.5, STAGE_MIN_F1_MACRO=0.5, STAGE_MAX_RECALL_GAP=50, STAGE_MAX_DUSK_RECALL_GAP=100,
                 STAGE_MAX_P95_MS=5000, **{f'STAGE_MAX_DROP_{c.upper()}': 100 for c in
                                           ('night', 'fog', 'motion_blur', 'noise', 'jpeg', 'occlusion')})
    return {f'PARKML_{k}': str(v) for k, v in {**loose, **strict}.items()}

QA = dict(PARKML_USER='qa-anna', PARKML_PASSWORD='anna-secret-1')   # signed in through the environment, as scripts do
OWNER = dict(PARKML_USER='owner-olaf', PARKML_PASSWORD='olaf-secret-1')

@pytest.fixture(scope='module')
def people(trained, tmp_path_factory):
    "The park's QA and owner, real users with signing keys, who sign in to the CLI with a password (PARKML_PASSWORD)"
    from parkml.users import add_user, authenticate
    base = tmp_path_factory.mktemp('staging-people')
    with pytest.MonkeyPatch.context() as mp:
        for k, v in dict(PARKML_USERS_FILE=base/'users.yaml', PARKML_KEYS_DIR=base/'keys',
                         PARKML_TRUSTED_KEYS=base/'trusted_keys.json').items(): mp.setenv(k, str(v))
        add_user(OWNER['PARKML_USER'], 'owner', OWNER['PARKML_PASSWORD'])
        owner = authenticate(OWNER['PARKML_USER'], OWNER['PARKML_PASSWORD'], env=False)
        add_user(QA['PARKML_USER'], 'qa', QA['PARKML_PASSWORD'], by=owner)
        yield

@pytest.fixture(scope='module')
def staged(trained, people):
    "`parkml stage` on the trained fixture version with a threshold it cannot meet: (version, CompletedProcess, summary)"
    v = trained['version']
    r = run_cli('stage', v, *QUICK, '--quiet', env=lenient_env(STAGE_MIN_ACCURACY=1.01))
    return v, r, summary_of(r.stdout)

def test_failed_gate_fails_the_version_and_release_refuses_it(staged, trained):
    v, r, s = staged
    assert r.returncode == 1, r.stdout + r.stderr
    assert s['verdict'] == 'failed' and s['failed_gates'] == ['accuracy']
    assert 'FAIL  accuracy' in r.stdout and 'stage_min_accuracy' in r.stdout and 'report (open in a browser)' in r.stdout
    t = tags_of(v)
    assert t['validation_status'] == 'failed' and t['staging_run_id']
    assert 'accuracy' in t['validation_reasons'] and 'stage_min_accuracy' in t['validation_reasons']
    a = run_cli('approve', v, env=QA)
    assert a.returncode == 2 and 'failed staging' in a.stderr and 'stage_min_accuracy' in a.stderr
    rel = run_cli('release', v, env=OWNER)
    assert rel.returncode == 2 and 'failed staging' in rel.stderr and 'not approved' in rel.stderr

def test_report_run_and_summary(staged):
    from parkml.config import get_settings
    from parkml.tracking import mlflow_client
    v, r, s = staged
    assert s['sizes']['clean'] == 80 and s['sizes']['per_condition'] == dict(night=40, fog=12, motion_blur=12, noise=12, jpeg=12, occlusion=12)
    assert s['sizes']['one_camera'] == 30 and s['sizes']['fairness_extra'] == 40
    assert s['sizes']['frames'] == 30 + 80 + 40 + 3 * 40 + 15 * 12
    # every gate in the summary: its value, what was measured, and whether it passed, consistent with its rule
    for g in s['gates']:
        assert {'gate', 'value', 'measured', 'passed', 'setting', 'rule'} <= set(g)
        ok = g['measured'] >= g['value'] if g['rule'].startswith('>=') else g['measured'] <= g['value']
        assert g['passed'] == ok, g
    # the gates on proportions carry a 95% interval and their sample; unsettled means the interval straddles the rule
    gi = {g['metric']: g for g in s['gates']}
    for m, n in (('accuracy', 80), ('recall_gap_points', 80), ('drop_night', 40), ('drop_noise', 12)):
        assert gi[m]['n'] == n and gi[m]['low'] <= gi[m]['measured'] <= gi[m]['high'], gi[m]
        assert gi[m]['settled'] == (not gi[m]['low'] < gi[m]['value'] < gi[m]['high']), gi[m]
    assert gi['accuracy']['settled'] and "[95% " in r.stdout and gi['latency_p95_ms']['n'] == 0
    assert s['unsettled'] == [g['gate'] for g in s['gates'] if not g['settled']]
    names = ' '.join(g['gate'] for g in s['gates'])
    for want in ('accuracy', 'macro F1', 'recall gap', 'drop under night', 'dusk', 'p95 latency', '5xx', 'bad inputs'):
        assert want in names, want
    # the engine that served: its decisions against ONNX Runtime's and its answers against the version's reference
    eng = {g['metric']: g for g in s['gates'] if g['metric'] in ('engine_agreement', 'engine_drift_p')}
    assert eng['engine_agreement']['passed'] and eng['engine_drift_p']['passed'], eng
    assert s['engine']['name'] in ('onnxruntime', 'openvino') and 'ONNX Runtime' in s['engine']['agreement']
    assert 0 <= s['measured']['engine_max_delta_p_dog'] < 0.1 and s['measured']['engine_decisions_differ'] == 0
    # the service: every frame answered, well-formed, bad inputs refused with 4xx, memory and latency measured
    sv = s['service']
    assert sv['errors_5xx'] == 0 and sv['malformed_answers'] == 0 and sv['bad_inputs_4xx'] == sv['bad_inputs'] == 11
    assert sv['peak_rss_mb'] > 50 and 0 < sv['latency_p50_ms'] <= sv['latency_p95_ms'] <= sv['latency_p99_ms']
    assert all(b['answered_4xx'] and b['as_expected'] for b in s['bad_inputs'])
    assert 'favours' in s['recall_gap_sentence'] or 'alike' in s['recall_gap_sentence']
    assert {r_['condition'] for r_ in s['robustness']} == {'night', 'fog', 'motion_blur', 'noise', 'jpeg', 'occlusion'}
    assert {f['grouping'] for f in s['fairness']} >= {'class', 'source', 'breed group', 'lighting band', 'lighting band (clean + dusk)'}
    fair = pd.DataFrame(s['fairness'])
    assert set(fair[fair.grouping == 'source'].group) == {'kaggle', 'breeds'} and (fair.grouping == 'breed group').sum() > 4
    # the prediction log of the staging service holds every answered frame
    from parkml.predlog import open_store
    st = open_store(sv['predlog'], Path(s['home'])/'service'/'frames')
    logged_bad = sum(b['code'] != 'unsupported_format' for b in s['bad_inputs'])   # other formats are never logged
    try: assert logged_bad == 10 and st.counts()['predictions'] >= s['sizes']['frames'] + logged_bad
    finally: st.close()
    # the MLflow run: linked to the version, with the executed notebook, its HTML, the summary and the plots
    cfg = get_settings(); client = mlflow_client(cfg)
    run_id = tags_of(v)['staging_run_id']
    run = client.get_run(run_id)
    assert run.data.tags['parkml.model_version'] == v and run.data.tags['parkml.kind'] == 'staging' and run.info.status == 'FINISHED'
    arts = {a.path for d in ('notebook', 'staging', 'plots') for a in client.list_artifacts(run_id, d)}
    assert {'staging/summary.json', 'plots/robustness.png', 'plots/fairness.png', 'plots/latency.png'} <= arts
    assert any(a.endswith('.html') for a in arts) and any(a.endswith('.ipynb') for a in arts)
    html = Path(next(l for l in r.stdout.splitlines() if l.startswith('report'))[len('report (open in a browser): '):])
    assert html.is_file() and 'Robustness under the park' in html.read_text() and 'data:image/png;base64' in html.read_text()
    assert run.data.metrics['stage_passed'] == 0.0 and run.data.metrics['clean_accuracy'] == pytest.approx(s['metrics']['accuracy'])
    assert run.data.metrics['stage_engine_max_delta_p_dog'] == pytest.approx(s['measured']['engine_max_delta_p_dog'])

def test_relaxed_threshold_passes_and_release_follows(staged, monkeypatch, tmp_path):
    "The same version, the accuracy gate back at a value it meets: passed; QA approves; release moves champion"
    from parkml.staging import run_staging
    from parkml.staging_record import start_staging_run, record_verdict
    v, _, s1 = staged
    for k, val in lenient_env().items(): monkeypatch.setenv(k, val)
    r = run_staging(v, home=tmp_path/'stage', **SMALL)
    s = r.summary
    assert s['verdict'] == 'passed' and r.gates.passed.all(), r.gates
    assert s['metrics']['accuracy'] == pytest.approx(s1['metrics']['accuracy'])   # same images, same answers
    record_verdict(v, start_staging_run(v), s)
    t = tags_of(v)
    assert t['validation_status'] == 'passed' and 'validation_reasons' not in t
    from parkml.config import get_settings
    from parkml.tracking import mlflow_client, registry_sha256
    assert t['staging_onnx_sha256'] == registry_sha256(mlflow_client().get_model_version(get_settings().model_name, v))
    a = run_cli('approve', v, env=QA)
    assert a.returncode == 0 and 'signed: approval of ONNX sha256 ' + t['staging_onnx_sha256'] in a.stdout, a.stderr
    rel = run_cli('release', v, env=OWNER)
    assert rel.returncode == 0, rel.stderr
    from parkml.governance import alias_history
    h = alias_history()
    assert list(h[h.alias == 'champion'].to_version)[-1] == v and (h.alias == 'challenger').sum() >= 2

def test_summary_matches_a_separate_client_against_the_same_server(staged, tmp_path, monkeypatch):
    "The staging measures against a running service; a plain httpx client posting the same photos measures the same"
    from parkml.staging import run_staging
    from parkml.staging_service import StagingService
    from parkml.staging_inputs import staging_images
    v, _, _ = staged
    monkeypatch.setenv('PARKML_STAGE_FAIRNESS_EXTRA', '8'); monkeypatch.setenv('PARKML_STAGE_LATENCY_FRAMES', '10')
    with StagingService('challenger', tmp_path/'svc') as svc:
        res = run_staging(v, url=svc.url, service_pid=svc.proc.pid, home=tmp_path/'stage', **SMALL)
        imgs = staging_images(80)
        with httpx.Client(base_url=svc.url, timeout=30) as c:
            mine = [c.post('/predict', content=Path(p).read_bytes(), headers={'Content-Type': 'image/jpeg'}).json() for p in imgs.path]
    p = np.array([a['p_dog'] for a in mine])
    assert len(p) == res.summary['sizes']['clean'] == 80
    acc = float(((p >= 0.5) == imgs.y.values).mean())
    assert res.summary['metrics']['accuracy'] == pytest.approx(acc, abs=1e-12)
    clean = res.predictions[res.predictions.condition == 'clean'].set_index('relpath').loc[imgs.relpath]
    assert np.allclose(clean.p_dog.values, p, atol=1e-5)
    assert {a['model']['version'] for a in mine} == {v}

@pytest.fixture(scope='module')
def biased(trained):
    "A candidate trained where cats are rare (5% of the training cats kept)"
    from parkml.train import train_and_register
    return train_and_register(limit=120, cat_fraction=0.05, run_name='biased', progress=False)

def test_biased_candidate_fails_the_recall_gap_gate_in_words(biased, tmp_path, monkeypatch):
    from parkml.staging import run_staging
    from parkml.staging_record import record_verdict, start_staging_run
    from parkml.governance import release_refusals
    v = biased.version
    env = lenient_env()
    env.pop('PARKML_STAGE_MAX_RECALL_GAP')
    for k, val in env.items(): monkeypatch.setenv(k, val)
    res = run_staging(v, home=tmp_path/'stage', **SMALL)
    s = res.summary
    g = res.gates.set_index('metric')
    assert not g.loc['recall_gap_points', 'passed'], res.gates
    why = g.loc['recall_gap_points', 'reason']
    assert 'favours dogs over cats by' in why and 'stage_max_recall_gap' in why
    run_id = start_staging_run(v)
    record_verdict(v, run_id, s)
    t = tags_of(v)
    assert t['validation_status'] == 'failed' and 'favours dogs over cats' in t['validation_reasons']
    assert any('failed staging' in r and 'favours dogs over cats' in r for r in release_refusals(v, t))
    # when there is a champion (the fixture version, released above), the candidate is compared with it on the same frames
    assert (s['champion'] is not None) == ('champion' in res.tables)

def test_engine_gates_fail_an_altered_engine_output_with_the_reason(trained, tmp_path):
    """A copy of the candidate's graph with a shifted head bias, served as the engine's model (OpenVINO), against ONNX
    Runtime on the registered graph and against the version's reference: both engine gates fail and say why"""
    import shutil
    from parkml.config import get_settings
    from parkml.data import load_images
    from parkml.model import OnnxModel, OpenVinoModel
    from parkml.monitor import load_reference
    from parkml.staging_inputs import staging_images
    from parkml.staging_checks import engine_agreement, reference_agreement, reference_images, judge
    from parkml.tracking import resolve_version, local_onnx
    from test_model import perturb_head
    import onnx
    cfg = get_settings()
    mv = resolve_version(trained['version'])
    good = local_onnx(mv)
    X, _, _ = load_images(staging_images(60).path)
    p_onnx = OnnxModel(good).predict(X)
    head_b = next(i for i in onnx.load(str(good)).graph.initializer if i.name == 'head_b')
    bias = float(onnx.numpy_helper.to_array(head_b)[0])
    altered = tmp_path/'altered.onnx'
    shutil.copy(good, altered)
    logit = np.log(p_onnx / (1 - p_onnx))
    perturb_head(altered, bias - float(np.quantile(logit, 0.75)))   # a quarter of the images change side
    ref = load_reference(mv)
    Xr = reference_images(ref)
    verdicts = {}
    for name, path in (('good', good), ('altered', altered)):
        om = OpenVinoModel(path)
        m1, t1 = engine_agreement(om.predict(X), p_onnx, om.engine)
        m2, t2 = reference_agreement(om, ref, Xr)
        g = judge({**m1, **m2}, cfg, notes=dict(engine_agreement=t1, engine_drift_p=t2)).set_index('metric')
        verdicts[name] = g.loc[['engine_agreement', 'engine_drift_p']]
    assert verdicts['good'].passed.all(), verdicts['good'].reason.tolist()
    bad = verdicts['altered']
    assert not bad.passed.any()
    why = bad.reason.to_dict()
    assert 'stage_min_engine_agreement' in why['engine_agreement'] and 'openvino decided' in why['engine_agreement']
    assert 'otherwise than ONNX Runtime' in why['engine_agreement']
    assert 'stage_min_engine_drift_p' in why['engine_drift_p'] and 'DRIFT' in why['engine_drift_p']
