"""Monitoring on real petpark frames through a real model version: each integrity check on crafted frames logged in a
real prediction log, drift calibration on clean windows and power under CCTV conditions, performance against a hand count."""
import io
import numpy as np, pandas as pd, pytest
from PIL import Image
from scipy import stats
from parkml.config import get_settings
from parkml.data import read_imageset, assign_splits
from parkml.model import OnnxModel
from parkml.predlog import open_store, new_prediction_id
from parkml.tracking import local_onnx, resolve_version
from parkml import monitor as mon
from parkml import simulate as sim
from parkml.drift import drift_tests
from parkml.estimate import estimate_error, estimate_performance, estimated_by_day, fit_calibrator

DAY = '2026-03-02'
T10 = pd.Timestamp(f'{DAY} 10:00', tz='UTC').timestamp()  # traffic hours are 7-21 UTC


@pytest.fixture(scope='module')
def env(trained):
    "The trained version, its reference, its ONNX graph and 300 holdout images (the pool `synthetic_day(n_images=300)` draws)"
    cfg = get_settings()
    mv = resolve_version(str(trained['version']))
    ref = mon.load_reference(mv, cfg=cfg)
    om = OnnxModel(local_onnx(mv))
    hold = assign_splits(read_imageset()).df.query("subset == 'holdout'")
    pool = hold.sample(300, random_state=0).reset_index(drop=True)
    clean, _ = sim.cached_outputs(om, mv.run_id, pool, None, 3, cfg, False)
    return dict(cfg=cfg, mv=mv, ref=ref, om=om, pool=pool, clean=clean.assign(y=pool.y.values))


def log_window(store, outs: pd.DataFrame, ts, camera='cam-01', mv=None) -> list[str]:
    "Log model outputs (rows of `model_outputs`) as the service does, at capture times `ts`"
    recs = []
    for o, t in zip(outs.to_dict('records'), ts):
        ok = o['status'] == 'ok'
        r = dict(id=new_prediction_id(t), ts=float(t), camera=camera, model_name='parkml-catdog',
                 model_version=str(mv.version) if mv else '1', status=o['status'], error=o['error'],
                 label=('dog' if o['p_dog'] >= 0.5 else 'cat') if ok else None, frame_sha=o['frame_sha'], latency_ms=9.0,
                 **{k: (o[k] if ok else None) for k in ('p_dog', 'proj', 'width', 'height', 'brightness', 'contrast', 'sharpness')})
        recs.append({k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()})
    return store.log_predictions(recs)


def jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO(); img.convert('RGB').save(buf, 'JPEG', quality=90); return buf.getvalue()


def photo(env, i) -> Image.Image: return Image.open(env['pool'].path[i]).convert('RGB')


def crafted(env, case) -> tuple[list, dict]:
    "Frames (bytes) of one failure case built from real petpark photos, and how to place them in the window"
    pool = env['pool']
    if case == 'decode_failures':
        real = open(pool.path[0], 'rb').read()
        return [b'', b'hello, not an image', real[:200], real[:len(real) // 3], b'\x89PNG\r\n\x1a\n' + b'\0' * 40], {}
    if case == 'image_size':
        return [jpeg(photo(env, i).resize((24, 18))) for i in range(4)] + [jpeg(photo(env, 5).resize((4200, 120)))], {}
    if case in ('brightness_range', 'contrast_range', 'blurred'):
        cond = dict(brightness_range='night', contrast_range='fog', blurred='motion_blur')[case]
        return [sim.frame_bytes(pool.path[i], cond, 3, seed=i) for i in range(150, 165)], {}
    if case == 'blank':  # lens covered: real photos crushed to near black, and one fully black
        return [jpeg(photo(env, i).point(lambda v: v // 60)) for i in range(4)] + [jpeg(photo(env, 4).point(lambda v: 0))], {}
    if case == 'frozen_camera':  # the camera keeps sending one picture, every 2 s for a minute
        return [open(pool.path[7], 'rb').read()] * 30, dict(step=2)
    raise ValueError(case)


CASES = ['decode_failures', 'image_size', 'brightness_range', 'contrast_range', 'blurred', 'blank', 'frozen_camera']


@pytest.fixture
def store(tmp_path):
    with open_store(f"sqlite:///{tmp_path}/predlog.db", tmp_path/'frames') as s: yield s


def clean_window(env, store, start=T10, n=120, step=60):
    "n distinct clean frames, one every `step` s from `start`"
    log_window(store, env['clean'].iloc[:n], start + step * np.arange(n), mv=env['mv'])


def test_clean_window_passes_every_check(env, store):
    clean_window(env, store)
    w = store.predictions()
    checks = mon.integrity_checks(w, env['ref'], T10, T10 + 7200, cfg=env['cfg'])
    t = mon.checks_table(checks)
    assert len(w) == 120 and set(t.name) == {*CASES, 'traffic_gap'}, t
    assert t.passed.all(), t[~t.passed]


@pytest.mark.parametrize('case', CASES)
def test_integrity_check_fails_on_crafted_frames(env, store, case):
    frames, how = crafted(env, case)
    outs = sim.model_outputs(env['om'], frames, progress=False)  # the service's decode, features and ONNX path
    clean_window(env, store)
    at = T10 + 1801 + how.get('step', 3) * np.arange(len(frames))  # between two clean frames (one a minute) at 10:30
    log_window(store, outs, at, mv=env['mv'])
    w = store.predictions(T10, T10 + 7200)
    checks = {c.name: c for c in mon.integrity_checks(w, env['ref'], T10, T10 + 7200, cfg=env['cfg'])}
    c = checks[case]
    assert not c.passed, (case, c)
    assert checks['traffic_gap'].passed and checks['decode_failures' if case != 'decode_failures' else 'image_size'].passed
    ev = c.evidence
    if case == 'decode_failures':
        assert ev['count'] == 5 and set(ev['by_code']) <= set(mon.DECODE_CODES) and ev['by_code'].get('empty') == 1
        assert (outs.status == 'rejected').all()
    elif case == 'frozen_camera':
        run, = ev['runs']
        assert run['frames'] == 30 and run['camera'] == 'cam-01' and c.statistic == 30
    else:
        assert ev['count'] >= 3 and ev['count'] <= len(frames) + 2 and ev['by_camera'] == {'cam-01': ev['count']}
        iso = lambda t: pd.Timestamp(t, unit='s', tz='UTC').isoformat()
        assert set(ev['examples']) <= set(w.id) and ev['first'] <= iso(at[-1]) and ev['last'] >= iso(at[0])
    if case == 'brightness_range': assert ev['below'] >= 10
    if case == 'contrast_range': assert ev['below'] >= 10
    if case == 'image_size': assert ev['count'] == 5
    if case == 'blank': assert ev['count'] == 5


def test_frozen_for_minutes_with_few_frames(env, store):
    "A second camera sends eight copies of one frame over ten minutes: under the frame count, over the time limit"
    clean_window(env, store)
    frame = open(env['pool'].path[9], 'rb').read()
    log_window(store, sim.model_outputs(env['om'], [frame] * 8, progress=False), T10 + 3000 + 85 * np.arange(8), 'cam-02', env['mv'])
    c = mon.check_frozen(store.predictions(), env['cfg'])
    run, = c.evidence['runs']
    assert not c.passed and (run['camera'], run['frames']) == ('cam-02', 8) and 9.5 < run['minutes'] < 10
    w = store.predictions()
    assert mon.check_frozen(w[w.camera == 'cam-01'], env['cfg']).passed
    assert mon.check_frozen(w[(w.camera == 'cam-02') & (w.ts < T10 + 3000 + 85 * 3.5)], env['cfg']).passed  # 4 copies, 4 min


def test_traffic_gaps(env, store):
    ts = T10 + 60 * np.arange(120)
    keep = (ts < T10 + 40 * 60) | (ts >= T10 + 66 * 60)  # the camera is silent from 10:40 to 11:06
    log_window(store, env['clean'].iloc[:120][keep], ts[keep], mv=env['mv'])
    c = mon.check_gaps(store.predictions(), start=T10, end=T10 + 7200, cfg=env['cfg'])
    g, = c.evidence['gaps']
    assert not c.passed and g['camera'] == 'cam-01' and 26 < g['minutes'] <= 27.5 and g['start'].startswith(f'{DAY}T10:39')
    # a camera that sent nothing at all is one long gap; silence after traffic hours (21:00) is no gap
    c2 = mon.check_gaps(store.predictions(), start=T10, end=T10 + 7200, cameras=['cam-01', 'cam-02'], cfg=env['cfg'])
    assert {x['camera'] for x in c2.evidence['gaps']} == {'cam-01', 'cam-02'}
    evening = pd.Timestamp(f'{DAY} 20:00', tz='UTC').timestamp()
    log_window(store, env['clean'].iloc[:60], evening + 55 * np.arange(60), mv=env['mv'])  # 20:00 - 20:54
    c3 = mon.check_gaps(store.predictions(evening, evening + 3 * 3600), start=evening, end=evening + 3 * 3600,
                        cfg=env['cfg'])
    assert c3.passed and c3.statistic == 0


def windows(df, size, k, seed=0):
    rng = np.random.default_rng(seed)
    return [df.iloc[rng.choice(len(df), size, replace=False)].assign(ts=0.0, status='ok') for _ in range(k)]


def test_drift_calibrated_on_clean_windows(env):
    """Clean holdout windows against the version's reference: at most 1 of 20 windows flagged at each size; no single test
    under alpha on more than 2 of 20 windows, and the median p-value of each test well above it. (The windows share one
    pool of 300 frames, so their p-values are correlated; the next test checks uniformity where it is exact.)"""
    cfg, ref = env['cfg'], env['ref']
    for size in (50, 150):
        reps = [drift_tests(ref, w, cfg, seed=k) for k, w in enumerate(windows(env['clean'], size, 20, seed=size))]
        assert sum(r.drift for r in reps) <= 1, [r.summary() for r in reps if r.drift]
        p = pd.DataFrame([{t.name: t.p_value for t in r.tests} for r in reps])
        assert list(p.columns) == ['embedding', 'p_dog', 'dog_share', 'confidence', 'features']
        assert ((p < cfg.drift_alpha).sum() <= 2).all(), p.describe()
        assert (p.median() > 0.1).all(), p.median()


def test_drift_p_values_uniform_when_exchangeable(env):
    "Reference and window drawn from one clean pool: each test's p-values over 20 splits are uniform (KS vs U(0,1))"
    cfg, clean = env['cfg'], env['clean']
    rng, ps = np.random.default_rng(1), []
    for k in range(20):
        i = rng.permutation(len(clean))
        r = drift_tests(clean.iloc[i[:150]], clean.iloc[i[150:]].assign(ts=0.0, status='ok'), cfg, seed=k)
        ps.append({t.name: t.p_value for t in r.tests})
    p = pd.DataFrame(ps)
    for name in ('embedding', 'p_dog', 'confidence'):
        assert stats.kstest(p[name], 'uniform').pvalue > 0.01, (name, p[name].round(3).tolist())


@pytest.mark.parametrize('cond', ['fog', 'night', 'motion_blur'])
def test_drift_detected_under_severity_3(env, cond):
    "150 frames under fog, night or motion blur (parkml.cctv, severity 3) are flagged, the embedding test first among them"
    cfg = env['cfg']
    pool = env['pool'].iloc[150:300]
    out, _ = sim.cached_outputs(env['om'], env['mv'].run_id, pool, cond, 3, cfg, False)
    r = drift_tests(env['ref'], out.assign(ts=0.0, status='ok'), cfg)
    assert r.drift and 'embedding' in r.fired and r.n_window == 150, r.summary()
    assert r.get('embedding').p_adjusted <= cfg.drift_alpha and 'DRIFT' in r.summary()


def test_performance_matches_hand_count(env, store):
    "Two days of labelled predictions with known confusion counts; one relabelled frame (the latest label wins)"
    clean = env['clean']
    cat_rows, dog_rows = clean[clean.p_dog < 0.5], clean[clean.p_dog >= 0.5]
    # day 1: 12 cats called cat, 3 cats called dog, 5 dogs called cat, 10 dogs called dog
    # day 2: 4 cats called cat, 1 cat called dog, 5 dogs called dog; plus 6 frames nobody labelled
    plan = [(DAY, 'cat', 'cat', 12), (DAY, 'cat', 'dog', 3), (DAY, 'dog', 'cat', 5), (DAY, 'dog', 'dog', 10),
            ('2026-03-03', 'cat', 'cat', 4), ('2026-03-03', 'cat', 'dog', 1), ('2026-03-03', 'dog', 'dog', 5), (DAY, None, 'dog', 6)]
    used = {'cat': 0, 'dog': 0}
    for day, truth, pred, n in plan:
        src = cat_rows if pred == 'cat' else dog_rows
        rows = src.iloc[used[pred]:used[pred] + n]; used[pred] += n
        t0 = pd.Timestamp(f'{day} 12:00', tz='UTC').timestamp()
        ids = log_window(store, rows, t0 + 61 * np.arange(n) + 7 * used[pred], mv=env['mv'])
        for i in ids if truth else []: store.add_feedback(i, truth, ts=t0 + 86000)
    # one day-1 dog called dog is first labelled 'cat' by mistake, then corrected
    lab = store.feedback()
    fix = lab[(lab.true_label == 'dog') & (lab.label == 'dog')].id.iloc[0]
    store.add_feedback(fix, 'cat', ts=T10 + 90000); store.add_feedback(fix, 'dog', ts=T10 + 90001)
    lab = store.feedback()
    assert len(lab) == 40
    perf = mon.performance_by_day(lab, env['cfg']).set_index('day')
    d1, d2 = perf.loc[DAY], perf.loc['2026-03-03']
    hand = {'n_labels': 30, 'accuracy': 22 / 30, 'precision_cat': 12 / 17, 'recall_cat': 12 / 15, 'precision_dog': 10 / 13,
            'recall_dog': 10 / 15, 'f1_cat': 24 / 32, 'f1_dog': 20 / 28, 'f1_macro': (24 / 32 + 20 / 28) / 2}
    for k, v in hand.items(): assert d1[k] == pytest.approx(v), k
    hand2 = {'n_labels': 10, 'accuracy': 9 / 10, 'recall_cat': 4 / 5, 'recall_dog': 1.0, 'precision_cat': 1.0,
             'precision_dog': 5 / 6, 'f1_cat': 8 / 9, 'f1_dog': 10 / 11}
    for k, v in hand2.items(): assert d2[k] == pytest.approx(v), k
    for d in (d1, d2):
        for k in ('accuracy', 'recall_cat', 'recall_dog', 'f1_cat', 'f1_dog', 'f1_macro'):
            assert d[f'{k}_lo'] <= d[k] <= d[f'{k}_hi'] and d[f'{k}_hi'] - d[f'{k}_lo'] > 0.05, k
    assert not perf.estimated.any()
    # Wilson 95% for 22/30 by hand: centre (22 + 1.92) / 33.84, half-width 1.96 * sqrt(22*8/30 + 0.96) / 33.84
    z = 1.959964; c = (22 + z * z / 2) / (30 + z * z); h = z * np.sqrt(22 * 8 / 30 + z * z / 4) / (30 + z * z)
    assert (d1.accuracy_lo, d1.accuracy_hi) == pytest.approx((c - h, c + h), abs=1e-6)
    from parkml.daily import label_counts
    assert label_counts(lab[mon.day_of(lab.ts).values == DAY]) == {'cat': (12, 15), 'dog': (10, 15)}


def test_label_free_estimate_marked_and_close_to_labels(env, store):
    "CBPE calibrated on the reference: marked estimated, within a few points of the labels on clean frames; its error is reported"
    cfg, clean = env['cfg'], env['clean']
    cal = fit_calibrator(env['ref'], cfg=cfg)
    est = estimate_performance(clean.p_dog, cal)
    actual = ((clean.p_dog >= 0.5).astype(int) == clean.y).mean()
    assert est['estimated'] is True and est['n'] == 300 and est['accuracy_lo'] <= est['accuracy'] <= est['accuracy_hi']
    assert abs(est['accuracy'] - actual) < 0.05, (est['accuracy'], actual)
    ids = log_window(store, clean, T10 + 100 * np.arange(300), mv=env['mv'])
    for i, y in zip(ids, clean.y): store.add_feedback(i, 'dog' if y else 'cat')
    err = estimate_error(store.feedback(), cal, cfg)
    row = err.iloc[0]
    assert row.day == DAY and row.n_labels == 300 and row.accuracy == pytest.approx(actual)
    assert row.accuracy_error == pytest.approx(row.accuracy_est - row.accuracy) and abs(row.accuracy_error) < 0.05
    by_day = estimated_by_day(store.predictions(), cal, cfg)
    assert by_day.estimated.all() and by_day.accuracy.iloc[0] == pytest.approx(est['accuracy'])
