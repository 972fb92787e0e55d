"""The typical labelling queue (`label_queue = typical`): on clustered points it labels one frame per cluster, the
central one, larger clusters first; a cluster that holds a labelled frame waits; dark frames get their share of the
clusters; and through a real prediction store, `next_frames` hands out the typical frames and skips covered clusters."""
import time
import numpy as np
import pytest
from parkml.label_queue import cluster_rounds, typical_order, band_quotas, band_draw, next_frames, rank_frames

SIZES = (40, 30, 20, 10)

def clustered(dim: int = 16, seed: int = 0) -> tuple:
    "Gaussian clusters of `SIZES` points far apart in `dim` dimensions, each with its exact centre; (points, centres)"
    rng = np.random.default_rng(seed)
    centres = 20 * np.eye(len(SIZES), dim)
    x = np.concatenate([np.r_[c[None], c + rng.normal(0, 1, (n - 1, dim))] for c, n in zip(centres, SIZES)])
    return x, centres

def test_one_frame_per_cluster_the_central_one_larger_clusters_first():
    x, centres = clustered()
    o = cluster_rounds(x, len(SIZES))
    assert sorted(o) == list(range(len(x)))
    np.testing.assert_array_equal(x[o[:len(SIZES)]], centres)   # each centre, in order of cluster size
    starts = np.cumsum((0,) + SIZES)[:-1]
    second = np.searchsorted(starts, o[len(SIZES)], side='right') - 1
    assert second == 0   # the second round starts again at the largest cluster

def test_a_cluster_holding_a_labelled_frame_waits():
    x, centres = clustered()
    o = cluster_rounds(x, len(SIZES), done=x[1:2])   # a frame of the largest cluster is labelled
    np.testing.assert_array_equal(x[o[:3]], centres[1:])
    np.testing.assert_array_equal(x[o[3]], centres[0])

def test_dark_frames_get_their_share_of_clusters_and_more_with_the_dark_weight():
    x, _ = clustered()
    band = np.where(np.arange(len(x)) >= 70, 'dark', 'normal')   # the two smallest clusters, 30 of 100 frames, are dark
    assert band_quotas(band, 10) == {'normal': 7, 'dark': 3}
    assert band_quotas(band, 10, weight=3) == {'normal': 4, 'dark': 6}   # x4 the dark share: 120 of 190
    for weight, dark in ((0, 3), (3, 6)):   # a day's first 10 places: the quotas
        first = typical_order(x, band, 10, weight=weight)[:10]
        assert (band[first] == 'dark').sum() == dark
    o = typical_order(x, band, 10, done=(x[70:72], np.array(['dark', 'dark'])))   # 2 dark frames already labelled
    assert (band[o[:8]] == 'dark').sum() == 1

def test_the_banded_draw_is_random_within_bands_at_the_quotas():
    band = np.where(np.arange(100) >= 70, 'dark', 'normal')
    key = np.random.default_rng(1).random(100)
    for weight, dark in ((0, 3), (3, 6)):
        first = band_draw(band, key, 10, weight)[:10]
        assert (band[first] == 'dark').sum() == dark
        for b in ('dark', 'normal'):   # within a band, the lowest keys
            got = first[band[first] == b]
            assert sorted(key[got]) == sorted(np.sort(key[band == b])[:len(got)])

@pytest.fixture
def clustered_store(tmp_path):
    "A real SQLite prediction store holding 100 answered frames whose projections form the four clusters"
    from parkml.predlog import open_store, encode_proj
    x, _ = clustered(dim=16)
    t0 = time.time() - 3600
    recs = [dict(ts=t0 + 10 * i, camera='cam-01', model_version='1', label='dog', p_dog=.9 - .003 * i,
                 brightness=.5, proj=encode_proj(v.astype(np.float32)), frame=f"frame {i}".encode())
            for i, v in enumerate(x)]
    with open_store(f"sqlite:///{tmp_path}/log.db", tmp_path/'frames') as s:
        yield s, s.log_predictions(recs), x

def test_next_frames_hands_out_typical_frames_and_skips_a_covered_cluster(clustered_store):
    from parkml.config import get_settings
    from parkml.governance import Actor
    from parkml.labels import add_label
    s, ids, x = clustered_store
    cfg = get_settings(label_queue='typical', label_day_budget=4, label_typical_share=1, label_random_share=0,
                       label_double_share=0, label_dark_weight=0)
    q = next_frames(s, 'sam', 4, cfg=cfg)
    assert q.id.tolist() == [ids[0], ids[40], ids[70], ids[90]] and set(q.why) == {'typical'}
    add_label(s, ids[0], 'dog', Actor('sam', 'staff', proof='password'))
    assert next_frames(s, 'sam', 3, cfg=cfg).id.tolist() == [ids[40], ids[70], ids[90]]
    alone = get_settings(label_queue='ranked', label_random_share=0, label_double_share=0)
    ranked = next_frames(s, 'sam', 4, cfg=alone)
    assert ranked.id.tolist()[0] == ids[99] and set(ranked.why) == {'ranked'}   # the most uncertain first

def test_half_typical_half_ranked_and_a_clear_error_for_an_unknown_queue(clustered_store):
    from parkml.config import get_settings
    from parkml.label_queue import candidates
    s, ids, _ = clustered_store
    c = candidates(s)
    half = rank_frames(c, cfg=get_settings(label_queue='typical', label_day_budget=4, label_typical_share=.5,
                                           label_random_share=0, monitor_tz='UTC'))
    assert half.pick.tolist()[:4] == ['typical', 'ranked', 'typical', 'ranked'] and sorted(half.id) == sorted(ids)
    banded = rank_frames(c, cfg=get_settings(label_queue='banded', label_day_budget=10, label_dark_weight=3,
                                             label_random_share=0, monitor_tz='UTC'))
    assert set(banded.pick) == {'banded'} and sorted(banded.id) == sorted(ids)
    with pytest.raises(ValueError, match='ranked, typical, banded, random'):
        rank_frames(c, how='typicl', cfg=get_settings(monitor_tz='UTC'))
