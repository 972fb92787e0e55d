"""The Live page of the governance app under AppTest: before the sentry ran, and after a real sentry round over a real
prediction log in which a camera froze (the park of tests/park_fixture.py, its model's real reference)."""
import time
import pandas as pd
from test_app import park, signed_in, page, texts  # noqa: F401 (park is a fixture)

def log_camera(park, n_moving: int = 5, n_frozen: int = 30):
    "Real photos posted as camera cam-live one second apart: a few different ones, then one repeated"
    from parkml.config import get_settings
    from parkml.predlog import open_store
    from parkml.service import analyse_frame
    cfg = get_settings()
    m = pd.read_csv(cfg.data/'manifest.csv')
    photos = [(cfg.data/p).read_bytes() for p in m[m.split == 'test'].path.head(n_moving + 1)]
    seq = photos[:n_moving] + [photos[n_moving]] * n_frozen
    t0 = park['t_release'] + 1000
    recs = [dict(ts=t0 + i, camera='cam-live', model_name=cfg.model_name, model_version='1', run_id=park['src'].run_id,
                 label='cat', p_dog=0.2, latency_ms=12.0, frame=b, **analyse_frame(b, 224, cfg.max_megapixels)[1])
            for i, b in enumerate(seq)]
    with open_store() as st: st.log_predictions(recs)

def test_live_page(park, tmp_path, monkeypatch):
    import streamlit as st
    from parkml.config import get_settings
    from parkml.sentry_run import run_sentry
    monkeypatch.setenv('PARKML_SENTRY_STATE_DIR', str(tmp_path/'sentry'))
    at = page(signed_in('vic', park['users']['vic'][1]), 'live')       # a viewer may look
    assert 'the sentry has not run yet' in texts(at)
    log_camera(park)
    res = run_sentry(get_settings(sentry_clock='capture', sentry_check_s=5, sentry_settle_s=0, alert_webhook_url=''),
                     from_start=True, once=True)
    assert res['raised'] >= 1 and res['open'] >= 1, res
    st.cache_data.clear()
    at = page(at, 'live')
    t = texts(at)
    assert '**cam-live**: 35 frames' in t and 'failing: frozen_camera' in t, t
    assert 'sentry_frozen_camera' in at.dataframe[0].value.rule.tolist()
    assert len(at.get('imgs')) + len(at.get('image')) >= 1
