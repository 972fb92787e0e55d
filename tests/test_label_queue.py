"""The banded labelling queue (`label_queue = banded`): a random draw within each lighting band, the dark band at its
quota x (1 + label_dark_weight); frames already labelled count as places their band took; and through a real SQLite
prediction store, `next_frames` hands out the banded frames."""
import time
import numpy as np
import pytest
from parkml.label_queue import band_quotas, band_draw, next_frames, rank_frames, candidates
from parkml.labels import draw_key

DARK_FROM = 70   # frames 70..99 of the store are dark

def test_dark_frames_get_their_share_of_places_and_more_with_the_dark_weight():
    band = np.where(np.arange(100) >= DARK_FROM, 'dark', 'normal')
    assert band_quotas(band, 10) == {'normal': 7, 'dark': 3}
    assert band_quotas(band, 10, weight=3) == {'normal': 4, 'dark': 6}   # x4 the dark share: 120 of 190
    assert band_quotas(band, 1000) == {'normal': 70, 'dark': 30}   # no more places than frames

def test_the_banded_draw_is_random_within_bands_at_the_quotas():
    band = np.where(np.arange(100) >= DARK_FROM, 'dark', 'normal')
    key = np.random.default_rng(1).random(100)
    for weight, dark in ((0, 3), (3, 6)):
        first = band_draw(band, key, 10, weight)[:10]
        assert (band[first] == 'dark').sum() == dark
        for b in ('dark', 'normal'):   # within a band, the lowest keys
            got = first[band[first] == b]
            assert sorted(key[got]) == sorted(np.sort(key[band == b])[:len(got)])
    assert sorted(band_draw(band, key, 10, 3)) == list(range(100))   # every frame once
    assert (band[band_draw(band, key, 10, 3, done_band=['dark', 'dark'])[:8]] == 'dark').sum() == 4   # 5 without

@pytest.fixture
def banded_store(tmp_path):
    "A real SQLite prediction store holding 100 answered frames, the last 30 dark"
    from parkml.predlog import open_store, encode_proj
    t0 = time.time() - 3600
    recs = [dict(ts=t0 + 10 * i, camera='cam-01', model_version='1', label='dog', p_dog=.9 - .003 * i,
                 brightness=.1 if i >= DARK_FROM else .5, proj=encode_proj(np.zeros(16, np.float32)),
                 frame=f"frame {i}".encode()) for i in range(100)]
    with open_store(f"sqlite:///{tmp_path}/log.db", tmp_path/'frames') as s:
        yield s, s.log_predictions(recs)

def test_next_frames_hands_out_the_banded_draw_and_counts_labelled_dark_frames(banded_store):
    from parkml.config import get_settings
    from parkml.governance import Actor
    from parkml.labels import add_label
    s, ids = banded_store
    cfg = get_settings(label_queue='banded', label_day_budget=10, label_dark_weight=3, label_random_share=0,
                       label_double_share=0)
    dark = set(ids[DARK_FROM:])
    c = candidates(s)
    lowest = c[c.id.isin(dark)].assign(k=lambda d: draw_key(d.frame_sha)).sort_values('k').id.tolist()
    q = next_frames(s, 'sam', 10, cfg=cfg)
    assert set(q.why) == {'banded'} and q.id.isin(dark).sum() == 6
    assert q.id[q.id.isin(dark)].tolist() == lowest[:6]   # the dark band's lowest draw keys, in key order
    for i in lowest[:2]: add_label(s, i, 'dog', Actor('sam', 'staff', proof='password'))
    q = next_frames(s, 'sam', 8, cfg=cfg)
    assert q.id.isin(dark).sum() == 4 and q.id[q.id.isin(dark)].tolist() == lowest[2:6]   # two dark places taken
    alone = get_settings(label_queue='ranked', label_random_share=0, label_double_share=0)
    ranked = next_frames(s, 'sam', 4, cfg=alone)
    assert ranked.id.tolist()[0] == ids[99] and set(ranked.why) == {'ranked'}   # the most uncertain first

def test_a_clear_error_for_an_unknown_queue_and_typical_is_gone(banded_store):
    from parkml.config import get_settings
    s, _ = banded_store
    for how in ('typicl', 'typical'):
        with pytest.raises(ValueError, match='ranked, banded, random'):
            rank_frames(candidates(s), how=how, cfg=get_settings(monitor_tz='UTC'))

def test_the_daily_judges_a_banded_queue_on_a_fair_sample(banded_store):
    "The banded queue labels dark frames at four times their share, yet `drawn_labels` keeps a uniform sample of the day"
    from parkml.config import get_settings
    from parkml.governance import Actor
    from parkml.labels import add_label, drawn_labels
    s, ids = banded_store
    cfg = get_settings(label_queue='banded', label_day_budget=20, label_dark_weight=3, label_random_share=0,
                       label_double_share=0, monitor_tz='UTC')
    for i in next_frames(s, 'sam', 20, cfg=cfg).id: add_label(s, i, 'dog', Actor('sam', 'staff', proof='password'))
    dark, lab = set(ids[DARK_FROM:]), s.feedback()
    assert len(lab) == 20 and lab.id.isin(dark).mean() > .5   # the labels lean dark (30% of the frames)
    fair = drawn_labels(s, lab, 0, time.time() + 60, cfg)
    keys = draw_key(candidates(s).frame_sha)
    cut = np.sort(keys[~candidates(s).id.isin(lab.id).to_numpy()])[0]   # the first unlabelled frame in key order
    one_day = len({time.strftime('%Y%m%d', time.gmtime(t)) for t in candidates(s).ts}) == 1   # else: judged per day
    if one_day: assert sorted(fair.id) == sorted(candidates(s).id[keys < cut])   # every frame below it: uniform
    assert len(fair) >= 5 and abs(fair.id.isin(dark).mean() - .3) < .25

def test_the_daily_cuts_the_banded_queues_labels_to_the_days_mix_and_leaves_random_labels_whole(banded_store):
    "`band_labels` (setting label_metrics_bands) gives the dark band its 30% among the banded queue's labels"
    from parkml.config import get_settings
    from parkml.governance import Actor
    from parkml.labels import add_label
    from parkml.label_queue import band_labels
    s, ids = banded_store
    cfg = get_settings(label_queue='banded', label_day_budget=40, label_dark_weight=3, label_double_share=0,
                       monitor_tz='UTC')
    assert cfg.label_metrics_bands is True   # on by default
    for i in next_frames(s, 'sam', 40, cfg=cfg).id: add_label(s, i, 'dog', Actor('sam', 'staff', proof='password'))
    dark, lab = set(ids[DARK_FROM:]), s.feedback()
    assert len(lab) == 40 and lab.id.isin(dark).sum() == 25   # 62% dark, on a day of 30% dark frames
    fair = band_labels(s, lab, 0, time.time() + 60, cfg)
    assert set(lab.id[~lab.id.isin(dark)]) <= set(fair.id)   # every normal-light label kept
    assert fair.id.isin(dark).sum() == 6 and len(fair) == 21   # 15 in normal light hold 70%: 6 dark ones are 30%

def test_labels_given_at_random_stay_whole(banded_store):
    from parkml.config import get_settings
    from parkml.label_queue import band_labels
    s, ids = banded_store
    for i in np.random.default_rng(3).choice(ids, 40, replace=False): s.add_feedback(i, 'dog')
    lab = s.feedback()
    assert len(band_labels(s, lab, 0, time.time() + 60, get_settings(monitor_tz='UTC'))) == len(lab) == 40

def test_labelling_in_small_batches_gives_the_dark_band_the_same_places_as_one_call(banded_store):
    "The quotas count the frames already labelled, so a person taking 5 frames at a time gets the day's dark share"
    from parkml.config import get_settings
    from parkml.governance import Actor
    from parkml.labels import add_label
    s, ids = banded_store
    cfg = get_settings(label_queue='banded', label_day_budget=40, label_dark_weight=3, label_double_share=0,
                       monitor_tz='UTC')
    first = next_frames(s, 'sam', 40, cfg=cfg).id   # one call: 25 dark of 40 (the quotas)
    for _ in range(8):
        for i in next_frames(s, 'sam', 5, cfg=cfg).id: add_label(s, i, 'dog', Actor('sam', 'staff', proof='password'))
    lab = s.feedback()
    assert len(lab) == 40 and first.isin(ids[DARK_FROM:]).sum() == 25
    assert lab.id.isin(ids[DARK_FROM:]).sum() == 25, lab.id.isin(ids[DARK_FROM:]).sum()
