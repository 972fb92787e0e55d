"""Staff label frames: the Label page under AppTest and in headless Chromium (keyboard included), labels in the store
with the person, corrections that keep history, disputes held out of training, `neither` out of the cat/dog metrics,
and the label functions on both store engines (SQLite and PostgreSQL)."""
import os, time
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
from pg_fixture import pg_server, pg_db, store_uri  # noqa: F401 (fixtures)

APP = Path(__file__).resolve().parents[1]/'app'
from app_server import running_app, signed_in_page, needs_chromium
USERS = {'olu': ('owner', 'olu-secret-1'), 'sam': ('staff', 'sam-secret-1'), 'tia': ('staff', 'tia-secret-1'),
         'vic': ('viewer', 'vic-secret-1')}

def petpark_frames(manifest, data_root, n: int) -> list:
    "(label, bytes) of `n` real test-split photos, cats and dogs"
    h = manifest[manifest.split == 'test']
    rows = pd.concat([h[h.label == 'cat'].head(n // 2 + 1), h[h.label == 'dog'].head(n // 2 + 1)]).sort_index()
    return [(r.label, (data_root/r.path).read_bytes()) for r in rows.head(n).itertuples()]

def log_frames(store, frames, t0: float) -> list:
    "Log the frames as answered predictions of two cameras, with a spread of P(dog); return their ids"
    rng = np.random.default_rng(0)
    recs = []
    for i, (lab, data) in enumerate(frames):
        p = float(np.clip((.75 if lab == 'dog' else .25) + rng.normal(0, .2), .01, .99))
        recs.append(dict(ts=t0 + 60 * i, camera=f"cam-0{1 + i % 2}", model_version='1',
                         label='dog' if p >= .5 else 'cat', p_dog=p, brightness=.5, contrast=.2, sharpness=.1, width=160, height=160, frame=data))
    return store.log_predictions(recs)

@pytest.fixture
def labelpark(tmp_path, monkeypatch, manifest, data_root):
    "A users file (owner, two staff, a viewer) and a prediction log of 12 real petpark frames of the last hour"
    from parkml.users import add_user, authenticate
    from parkml.predlog import open_store
    env = dict(PARKML_RUNS=str(tmp_path/'runs'), PARKML_MODEL_NAME=f"labels-{tmp_path.name}"[:60],
               PARKML_PREDLOG_URI=f"sqlite:///{tmp_path}/predlog.db", PARKML_FRAMES_DIR=str(tmp_path/'frames'),
               PARKML_USERS_FILE=str(tmp_path/'users.yaml'), PARKML_KEYS_DIR=str(tmp_path/'keys'),
               PARKML_TRUSTED_KEYS=str(tmp_path/'trusted_keys.json'),
               PARKML_GOVERNANCE_URI=f"sqlite:///{tmp_path}/gov.db",
               PARKML_LABEL_DOUBLE_SHARE='0')
    for k, v in env.items(): monkeypatch.setenv(k, v)
    for name, (role, pw) in USERS.items():
        add_user(name, role, pw, by=None if name == 'olu' else authenticate('olu', 'olu-secret-1', env=False))
    frames = petpark_frames(manifest, data_root, 12)
    assert len(frames) == 12
    with open_store() as s: ids = log_frames(s, frames, time.time() - 3600)
    return dict(ids=ids, truth=dict(zip(ids, [lab for lab, _ in frames])), env=env)

def signed_in(name):
    from streamlit.testing.v1 import AppTest
    import streamlit as st
    st.cache_data.clear()
    at = AppTest.from_file(str(APP/'Home.py'), default_timeout=120)
    at.run()
    at.text_input[0].input(name)
    at.text_input[1].input(USERS[name][1])
    at.button[0].click().run()
    at.switch_page(str(APP/'pages'/'label.py')).run()
    assert not at.exception, at.exception
    return at

def shown(at) -> str:
    "The prediction id the Label page shows now"
    cap = next(c.value for c in at.caption if 'why this frame' in c.value)
    return cap.rsplit('prediction ', 1)[1]

def history(pid):
    from parkml.predlog import open_store
    from parkml.labels import label_history
    with open_store() as s: return label_history(s, pid)[['person', 'answer']].values.tolist()

def test_staff_label_undo_and_correct_in_the_app(labelpark):
    """sam labels the queue's frames with the buttons: each answer is in the store with sam as its source; skip records
    nothing; undo brings the last frame back and the new answer corrects it, keeping the first in the history"""
    from parkml.predlog import open_store
    at = signed_in('sam')
    assert len(at.get('imgs')) or len(at.get('image')), 'no frame shown'
    first = shown(at)
    at.button(key='label-cat').click().run()
    assert history(first) == [['sam', 'cat']]
    second = shown(at)
    assert second != first and '1 of today' in at.get('progress')[0].proto.text
    at.button(key='label-skip').click().run()
    third = shown(at)
    assert third not in (first, second) and history(second) == []
    at.button(key='label-neither').click().run()
    at.button(key='label-undo').click().run()
    assert shown(at) == third and any('undo: you answered neither' in c.value for c in at.caption)
    at.button(key='label-dog').click().run()
    assert history(third) == [['sam', 'neither'], ['sam', 'dog']]   # corrected: the latest counts, the first stays
    with open_store() as s:
        fb = s.feedback(labels=None).set_index('id')
        assert fb.loc[third, 'true_label'] == 'dog' and fb.loc[third, 'feedback_source'] == 'sam'
        assert set(fb.index) == {first, third}
    assert not at.exception and '2 of today' in at.get('progress')[0].proto.text

def test_viewer_cannot_label(labelpark):
    from parkml.predlog import open_store
    at = signed_in('vic')
    assert any("role 'viewer', which may not label frames" in i.value for i in at.info)
    assert not [b for b in at.button if b.key and b.key.startswith('label-')]
    with open_store() as s: assert len(s.feedback(labels=None)) == 0

def test_disagreement_holds_a_frame_out_of_training(labelpark):
    """Two staff who disagree keep a frame out of the retraining set; a third answer settles it; `neither` and
    `unsure` never enter it"""
    from parkml.predlog import open_store
    from parkml.labels import add_label
    from parkml.users import authenticate
    from parkml.retraining import labelled_production_set
    sam, tia, olu = (authenticate(n, USERS[n][1], env=False) for n in ('sam', 'tia', 'olu'))
    a, b, c, d = labelpark['ids'][:4]
    with open_store() as s:
        add_label(s, a, 'cat', sam)
        add_label(s, a, 'dog', tia)
        add_label(s, b, 'dog', sam)
        add_label(s, c, 'neither', sam)
        add_label(s, d, 'unsure', tia)
        shas = lambda: sorted(labelled_production_set(s, exclude=[]).df.sha)
        sha = s.get_prediction(a)['frame_sha']
        assert shas() == [s.get_prediction(b)['frame_sha']]
        add_label(s, a, 'cat', olu)
        got = labelled_production_set(s, exclude=[]).df.set_index('sha')
        assert sorted(got.index) == sorted([sha, s.get_prediction(b)['frame_sha']]) and got.loc[sha, 'label'] == 'cat'

def test_neither_frames_leave_the_cat_dog_metrics_untouched(labelpark):
    "Accuracy, recalls and fairness over the labels are the same before and after staff answer `neither` elsewhere"
    from parkml.predlog import open_store
    from parkml.labels import add_label, answers, labels_by_day, neither_share_by_camera
    from parkml.users import authenticate
    from parkml.monitor import labels_of, labelled_performance, fairness_by_group
    sam = authenticate('sam', USERS['sam'][1], env=False)
    ids, truth = labelpark['ids'], labelpark['truth']
    def metrics(s):
        fb = s.feedback()
        perf = labelled_performance(*labels_of(fb))
        return len(fb), perf['accuracy'], perf['recall_cat'], perf['recall_dog'], fairness_by_group(fb)['sentence']
    with open_store() as s:
        for pid in ids[:8]: add_label(s, pid, truth[pid], sam)
        before = metrics(s)
        for pid in ids[8:]: add_label(s, pid, 'neither', sam)
        assert metrics(s) == before and before[0] == 8
        add_label(s, ids[0], 'neither', sam)   # a cat/dog answer corrected to neither leaves the metrics
        assert metrics(s)[0] == 7
        a = answers(s)
        assert labels_by_day(a).neither_share.sum() == pytest.approx(5 / 12)
        assert neither_share_by_camera(a).settled.sum() == 12

def test_a_camera_facing_a_wall_raises_the_neither_share_alert_and_the_report_shows_the_labels(labelpark, tmp_path):
    "Labels in the store: cam-03's neither share jumps from 5% to 60%; the daily rule names it, the report shows people"
    from types import SimpleNamespace
    from parkml.predlog import open_store
    from parkml.labels import add_label
    from parkml.users import authenticate
    from parkml.daily_rules import rule_neither_share
    from parkml.day_report import labels_tables, labels_figure
    from parkml.config import get_settings
    sam, tia = (authenticate(n, USERS[n][1], env=False) for n in ('sam', 'tia'))
    today = (time.time() - 7200) // 3600 * 3600   # the day's 40 frames within one clock hour: one run of hours
    with open_store() as s:
        recs = [dict(ts=today - 86400 * (1 - d) + 60 * i, camera='cam-03', model_version='1', label='dog', p_dog=.6,
                     brightness=.5, frame=f"cam-03 frame {d}-{i}".encode()) for d in (0, 1) for i in range(40)]
        ids = s.log_predictions(recs)
        for i, pid in enumerate(ids):
            said = 'neither' if (i < 2 or 40 <= i < 64) else 'dog'   # 2 of 40 yesterday, 24 of 40 today
            add_label(s, pid, said, sam if i % 2 else tia)
        add_label(s, ids[41], 'dog', tia)   # a second opinion that disagrees with sam's neither
    res = SimpleNamespace(start=today - 60, end=time.time(), box_ids=[])   # one box, no box ids
    cfg = get_settings(min_labels=30, monitor_tz='UTC')
    got = rule_neither_share(res, cfg)
    assert [(a.rule, a.camera, a.action) for a in got] == [('integrity_neither_share', 'cam-03', 'check the camera')]
    assert '23 of the 39 labelled frames of camera cam-03' in got[0].message, got[0].message
    hour = time.gmtime(today).tm_hour
    assert got[0].evidence['hours'] == [hour, hour + 1] and f"from {hour:02d}:00 to {hour + 1:02d}:00" in got[0].message
    assert got[0].evidence['settled_before'] == 40 and rule_neither_share(res, get_settings(neither_share_jump=.9)) == []
    tables = dict(labels_tables(res))
    person = tables["Labels by person (the day's frames)"].set_index('person')
    assert person.labels.to_dict() == {'sam': 20, 'tia': 21} and person.double.to_dict() == {'sam': 1, 'tia': 1}
    assert labels_figure(res.answers, res.start) is not None

def test_a_wall_for_two_hours_of_a_long_day_raises_the_neither_share_alert_naming_the_hours(labelpark):
    """cam-03 faces a wall from 14:00 to 16:00 of a 14-hour day: 28 of those 40 labelled frames are neither. Over the
    whole day its share rises 9 points (5% to 14%), under `neither_share_jump`, so judging the day as one block (the
    old rule) says nothing; the rule over runs of hours names the camera and the hours. cam-04 (ordinary) is quiet."""
    from types import SimpleNamespace
    from parkml.predlog import open_store
    from parkml.labels import add_label
    from parkml.users import authenticate
    from parkml.daily_rules import rule_neither_share, neither_shares, day_answers
    from parkml.config import get_settings
    sam, tia = (authenticate(n, USERS[n][1], env=False) for n in ('sam', 'tia'))
    start = (time.time() // 86400 - 1) * 86400   # yesterday, midnight UTC; the day before it is the days before
    plan = [('cam-03', -1, h, 20, 1) for h in range(8, 18)] + [('cam-04', -1, h, 10, 1) for h in range(8, 18)]
    plan += [('cam-03', 0, h, 20, 14 if h in (14, 15) else 1) for h in range(7, 21)]
    plan += [('cam-04', 0, h, 10, 1) for h in range(7, 21)]
    recs, said = [], []
    for cam, d, h, n, neither in plan:
        for i in range(n):
            recs.append(dict(ts=start + 86400 * d + 3600 * h + 60 * i, camera=cam, model_version='1', label='dog',
                             p_dog=.6, brightness=.5, frame=f"{cam} {d} {h} {i}".encode()))
            said.append('neither' if i < neither else 'dog')
    with open_store() as s:
        for k, (pid, answer) in enumerate(zip(s.log_predictions(recs), said)):
            add_label(s, pid, answer, (sam, tia)[k % 2])
    res = SimpleNamespace(start=start, end=start + 86400, box_ids=[])
    cfg = get_settings(min_labels=30, monitor_tz='UTC')
    day = neither_shares(day_answers(res, cfg), start).set_index('camera')
    jump = day.neither_share - day.neither_share_before
    assert round(day.neither_share['cam-03'] * 280) == 40 and day.settled['cam-03'] == 280
    assert round(jump['cam-03'], 3) == 0.093
    assert (jump < cfg.neither_share_jump).all()   # the whole day, one block: the old rule stays silent
    got = rule_neither_share(res, cfg)
    assert [(a.rule, a.camera, a.evidence['hours']) for a in got] == [('integrity_neither_share', 'cam-03', [14, 16])]
    ev = got[0].evidence
    assert (ev['neither'], ev['settled'], ev['day_neither'], ev['day_settled']) == (28, 40, 40, 280), ev
    msg = got[0].message
    assert 'from 14:00 to 16:00, 28 of the 40 labelled frames of camera cam-03 (70.0%)' in msg, msg

def test_labels_history_and_queue_on_both_engines(store_uri, tmp_path, manifest, data_root):
    "The same label functions on SQLite and PostgreSQL: history kept, latest wins, disputes, the queue's order"
    from parkml.predlog import open_store
    from parkml.governance import Actor
    from parkml.labels import add_label, label_history, training_labels, answers, agreement_by_person
    from parkml.label_queue import next_frames
    from parkml.config import get_settings
    sam, tia = Actor('sam', 'staff', proof='password'), Actor('tia', 'staff', proof='password')
    with open_store(store_uri, tmp_path/'frames') as s:
        ids = log_frames(s, petpark_frames(manifest, data_root, 6), time.time() - 3600)
        add_label(s, ids[0], 'dog', sam)
        add_label(s, ids[0], 'cat', sam)
        add_label(s, ids[1], 'dog', sam)
        add_label(s, ids[1], 'cat', tia)
        assert label_history(s, ids[0]).answer.tolist() == ['dog', 'cat']
        assert s.feedback().set_index('id').true_label.to_dict() == {ids[0]: 'cat', ids[1]: 'cat'}
        assert training_labels(s).id.tolist() == [ids[0]]
        assert agreement_by_person(answers(s)).set_index('person').double.to_dict() == {'sam': 1, 'tia': 1}
        nxt = next_frames(s, 'olu', 10, cfg=get_settings(label_random_share=0, label_queue='ranked'))   # ranking alone
        assert nxt.why.iloc[0] == 'dispute' and nxt.id.iloc[0] == ids[1] and set(nxt.id[1:]) == set(ids[2:])
        p = nxt.set_index('id').p_dog
        queue = list(nxt.id[1:])
        assert abs(p[queue[0]] - .5) <= abs(p[queue[-1]] - .5)   # the most uncertain frame before the surest

def test_drawn_places_say_random_and_make_a_fair_sample(tmp_path, manifest, data_root):
    "Frames the queue draws say why=random (not ranked), lowest draw key first; the daily can find them again"
    from parkml.predlog import open_store
    from parkml.governance import Actor
    from parkml.labels import add_label, draw_key, drawn_labels
    from parkml.label_queue import next_frames
    from parkml.config import get_settings
    cfg = get_settings(label_queue='ranked', label_random_share=0.5, label_double_share=0, monitor_tz='UTC')
    t0 = time.time() - 3600
    with open_store(f"sqlite:///{tmp_path}/log.db", tmp_path/'frames') as s:
        ids = log_frames(s, petpark_frames(manifest, data_root, 20), t0)
        q = next_frames(s, 'sam', 10, cfg=cfg)
        assert set(q.why) == {'ranked', 'random'}
        key = pd.Series(draw_key(q.frame_sha), index=q.id)
        drawn = q.id[q.why == 'random']
        assert list(key[drawn]) == sorted(key[drawn])   # the draw takes the lowest key first
        for pid in q.id: add_label(s, pid, 'cat', Actor('sam', 'staff', proof='password'))
        fair = drawn_labels(s, s.feedback(), t0 - 60, time.time(), cfg)
        all_keys = pd.Series(draw_key(s.predictions().frame_sha), index=s.predictions().id)
        below = all_keys[all_keys <= all_keys[fair.id].max()].index   # every frame up to the sample's largest key
        assert set(drawn) <= set(fair.id) and set(below) == set(fair.id) and set(fair.id) <= set(q.id)

@needs_chromium
def test_browser_staff_labels_with_the_keyboard(labelpark, tmp_path):
    """In headless Chromium, sam signs in, opens Label and answers with keys: K (cat), then Z (undo) and D (dog) to
    correct it, N (neither), S (skip); the store holds her answers and the correction's history"""
    from playwright.sync_api import sync_playwright, expect
    from parkml.predlog import open_store
    with running_app(tmp_path/'streamlit.log') as base:
        with sync_playwright() as pw:
            browser, page = signed_in_page(pw, base, 'sam', USERS['sam'][1])
            page.get_by_role('link', name='Label').click(timeout=60_000)
            expect(page.get_by_text("0 of today's").first).to_be_visible(timeout=60_000)
            def pid():
                t = page.get_by_text('why this frame').first.inner_text()
                return t.rsplit('prediction ', 1)[1].strip()
            def idle():
                page.wait_for_timeout(300)
                page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
                                       timeout=60_000)
            def press(key, expect_text):
                idle()
                page.evaluate('() => document.activeElement && document.activeElement.blur()')   # no widget has focus
                page.keyboard.press(key)
                expect(page.get_by_text(expect_text).first).to_be_visible(timeout=60_000)
            def gone(pid_):
                page.wait_for_function(f"() => !document.body.innerText.includes('{pid_}')", timeout=60_000)
                idle()
            first = pid()
            press('k', "1 of today's")
            gone(first)
            press('z', 'undo: you answered cat')
            assert pid() == first
            press('d', "1 of today's")   # a correction answers no new frame
            gone(first)
            second = pid()
            press('n', "2 of today's")
            gone(second)
            third = pid()
            press('s', 'why this frame')
            gone(third)
            shots = Path(os.environ['PARKML_RUNS'])/'screenshots'
            shots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shots/'label.png'), full_page=True)
            assert page.locator('[data-testid="stException"]').count() == 0
            browser.close()
        assert history(first) == [['sam', 'cat'], ['sam', 'dog']] and history(second) == [['sam', 'neither']]
        assert history(third) == []
        with open_store() as s: assert s.feedback(labels=None).feedback_source.unique().tolist() == ['sam']
