"Tests for parkml.evaluate: metrics against hand counts, intervals, robustness, fairness, error analysis and SHAP"
import math
import cv2
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image

from parkml.config import get_settings
from parkml.data import load_images
from parkml.evaluate import (METRIC_KEYS, bootstrap_ci, classification_metrics, confusion_figure, error_gallery,
                             fairness_figure, fairness_frame, fairness_table, lighting_band, recall_gap_sentence,
                             reliability_figure, robustness_figure, robustness_table, shap_explain, shap_figure,
                             wilson_ci, worst_errors)

# 4 cats, 6 dogs; at 0.5: cats 3 right + 1 wrong, dogs 4 right + 2 wrong. Values sit mid-bin for the ECE count.
Y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
P = np.array([0.15, 0.25, 0.35, 0.75, 0.95, 0.85, 0.75, 0.65, 0.45, 0.15])


def test_metrics_match_hand_count():
    m = classification_metrics(Y, P)
    assert tuple(m) == METRIC_KEYS and all(type(v) is float for v in m.values())
    # confusion: cats tn=3 fp=1, dogs tp=4 fn=2; predicted cat = 3 + 2, predicted dog = 4 + 1
    want = dict(accuracy=7/10, precision_cat=3/5, recall_cat=3/4, f1_cat=6/9, precision_dog=4/5, recall_dog=4/6,
                f1_dog=8/11, recall_gap=4/6 - 3/4, n=10)
    want |= dict(precision_macro=(3/5 + 4/5)/2, recall_macro=(3/4 + 4/6)/2, f1_macro=(6/9 + 8/11)/2)
    want['brier'] = (0.15**2 + 0.25**2 + 0.35**2 + 0.75**2 + 0.05**2 + 0.15**2 + 0.25**2 + 0.35**2 + 0.55**2 + 0.85**2)/10
    want['log_loss'] = -np.mean(np.where(Y == 1, np.log(P), np.log(1 - P)))
    # bins (mean p, dog rate, n): .15 (.5, 2) .25 (0) .35 (0) .45 (1) .65 (1) .75 (.5, 2) .85 (1) .95 (1)
    want['ece'] = (2*0.35 + 0.25 + 0.35 + 0.55 + 0.35 + 2*0.25 + 0.15 + 0.05)/10
    for k, v in want.items(): assert m[k] == pytest.approx(v, abs=1e-12), k
    m7 = classification_metrics(Y, P, threshold=0.7)  # at 0.7: cats 3 right, dogs 3 right
    assert m7['accuracy'] == pytest.approx(0.6) and m7['recall_dog'] == pytest.approx(0.5)


def test_absent_class_and_bad_input():
    m = classification_metrics([1, 1, 1], [0.9, 0.2, 1.0])
    assert m['recall_cat'] == 0 and m['precision_cat'] == 0 and m['recall_dog'] == pytest.approx(2/3)
    assert math.isfinite(m['log_loss']) and m['n'] == 3
    assert classification_metrics([0, 0], [0.1, 0.2])['accuracy'] == 1
    with pytest.raises(ValueError, match='only 0'): classification_metrics([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match='shape'): classification_metrics([0, 1], [0.1])
    with pytest.raises(ValueError, match='probabilities'): classification_metrics([0, 1], [0.1, 1.5])
    with pytest.raises(ValueError, match='non-empty'): classification_metrics([], [])


def test_recall_gap_sentence():
    y = [0, 0, 0, 1, 1, 1]
    assert recall_gap_sentence(y, [0, 0, 1, 1, 1, 1]) == \
        "The model favours dogs over cats by 33 points (dog recall 1.00 vs cat recall 0.67)."
    y = np.r_[np.zeros(20, int), np.ones(20, int)]
    yp = y.copy(); yp[-1] = 0  # dog recall 0.95, cat recall 1.00
    assert recall_gap_sentence(y, yp) == "The model favours cats over dogs by 5.0 points (cat recall 1.00 vs dog recall 0.95)."
    y = np.r_[np.zeros(500, int), np.ones(500, int)]
    yp = np.r_[np.zeros(450, int), np.ones(50, int), np.ones(452, int), np.zeros(48, int)]  # 0.900 vs 0.904
    assert recall_gap_sentence(y, yp) == \
        "The model treats cats and dogs alike (recall gap 0.4 points; cat recall 0.90, dog recall 0.90)."
    y = np.r_[np.zeros(8, int), np.ones(8, int)]
    yp = np.r_[np.zeros(6, int), np.ones(2, int), np.ones(7, int), np.zeros(1, int)]  # 0.875 - 0.75 = 12.5 points
    assert "favours dogs over cats by 13 points" in recall_gap_sentence(y, yp)  # whole points from 10 up, half up
    assert 'no cats' in recall_gap_sentence([1, 1], [1, 0])


def test_confidence_intervals():
    assert wilson_ci(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    widths = []
    for n in (50, 500, 5000):
        lo, hi = wilson_ci(int(0.8*n), n)
        assert lo < 0.8 < hi; widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    assert wilson_ci(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError): wilson_ci(6, 5)
    rng = np.random.default_rng(1)
    widths = []
    for n in (60, 600):
        y = rng.integers(0, 2, n); p = np.clip(y*0.4 + rng.random(n)*0.6, 0, 1)
        acc = classification_metrics(y, p)['accuracy']
        lo, hi = bootstrap_ci(y, p, n_boot=200)
        assert lo <= acc <= hi and (lo, hi) == bootstrap_ci(y, p, n_boot=200)  # seeded
        widths.append(hi - lo)
    assert widths[0] > widths[1]
    lo, hi = bootstrap_ci(y, p, metric=lambda a, b: float(np.mean(b)), n_boot=100)
    assert lo <= p.mean() <= hi
    with pytest.raises(ValueError, match='unknown metric'): bootstrap_ci(y, p, metric='auc')


def test_fairness_frame_per_group_by_hand():
    y = np.array([0, 0, 1, 1, 1, 0, 1, 0, 0, 0])
    yp = np.array([0, 1, 1, 0, 1, 0, 1, 1, 0, 1])
    groups = {'camera': ['a']*4 + ['b']*4 + ['c']*2, 'breed': ['x', None, 'x', 'x', 'y', 'y', 'y', 'y', 'x', 'x']}
    frames = fairness_frame(y, yp, groups)
    a = frames['camera'].by_group.loc['a']  # y 0 0 1 1, pred 0 1 1 0
    assert (a.accuracy, a.recall_cat, a.recall_dog, a.dog_rate, a.n) == (0.5, 0.5, 0.5, 0.5, 4)
    b = frames['camera'].by_group.loc['b']  # y 1 0 1 0, pred 1 0 1 1
    assert (b.accuracy, b.recall_cat, b.recall_dog, b.dog_rate, b.n) == (0.75, 0.5, 1.0, 0.75, 4)
    t = fairness_table(frames)
    assert list(t.columns) == ['grouping', 'group', 'accuracy', 'recall_cat', 'recall_dog', 'dog_rate', 'n']
    c = t.query("grouping == 'camera' and group == 'c'").iloc[0]  # two cats, one called dog
    assert c.accuracy == 0.5 and c.recall_cat == 0.5 and np.isnan(c.recall_dog) and c.n == 2
    assert t.query("grouping == 'breed' and group == 'unknown'").n.item() == 1
    assert fairness_table(fairness_frame(y, yp, pd.DataFrame(groups))).equals(t)
    fig = fairness_figure(t)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    with pytest.raises(ValueError, match='labels for'): fairness_frame(y, yp, {'camera': ['a']*3})
    with pytest.raises(ValueError, match='non-empty'): fairness_frame(y, yp, {})


def test_lighting_band():
    assert list(lighting_band([0.0, 0.249, 0.25, 0.449, 0.45, 1.0])) == ['dark', 'dark', 'dim', 'dim', 'normal', 'normal']
    with pytest.raises(ValueError): lighting_band([np.nan])


def test_robustness_table_drops():
    y = np.array([0, 0, 1, 1])
    clean = (y, np.array([0.1, 0.2, 0.8, 0.9]))  # all right: accuracy 1, macro F1 1
    res = {('night', 2): (y, np.array([0.6, 0.6, 0.4, 0.9])), ('night', 1): (y, np.array([0.1, 0.6, 0.8, 0.9])),
           ('fog', 1): clean}
    t = robustness_table(res, clean)
    assert list(zip(t.condition, t.severity)) == [('fog', 1), ('night', 1), ('night', 2)]
    r = t.iloc[1]  # one cat called dog: accuracy 3/4, F1 cat 2/3, F1 dog 4/5
    assert r.accuracy == 0.75 and r.accuracy_drop == pytest.approx(25)
    assert r.f1_drop == pytest.approx(100*(1 - (2/3 + 4/5)/2)) and (r.recall_cat, r.recall_dog) == (0.5, 1.0)
    assert t.iloc[2].accuracy_drop == pytest.approx(75) and t.iloc[0].accuracy_drop == 0
    fig = robustness_figure(t)
    assert isinstance(fig, Figure) and len(fig.axes[0].lines) == 3  # clean line + 2 conditions
    assert fig.axes[0].lines[0].get_ydata()[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match='empty'): robustness_table({}, clean)
    with pytest.raises(ValueError, match='condition, severity'): robustness_table({'night': clean}, clean)


def test_worst_errors():
    y, p = np.array([0, 1, 0, 1, 1]), np.array([0.9, 0.2, 0.4, 0.6, 0.05])
    assert list(worst_errors(y, p)) == [4, 0, 1] and list(worst_errors(y, p, k=1)) == [4]
    assert len(worst_errors([0, 1], [0.1, 0.9])) == 0


def _dots(n, h=48, seed=0):
    "Dark images with bright 2-px dots at random places, so blurring a region dims its dots"
    rng = np.random.default_rng(seed)
    x = np.full((n, h, h, 3), 20, np.uint8)
    for a in x:
        for r, c in rng.integers(0, h - 2, (60, 2)): a[r:r + 2, c:c + 2] = 250
    return x

def left_bright(x):
    "P(dog) from the share of bright pixels in the left half only"
    x = np.asarray(x); return (x[:, :, :x.shape[2]//2].mean(-1) > 200).mean((1, 2))


def test_shap_left_half_decides():
    x = _dots(3)
    a = shap_explain(left_bright, x, max_evals=120)
    assert a.shape == (3, 48, 48) and a.dtype == np.float32 and np.isfinite(a).all()
    left = np.abs(a[:, :, :24]).sum((1, 2))/np.abs(a).sum((1, 2))
    assert (left > 0.95).all(), left
    blurred = np.stack([cv2.blur(i, (16, 16)) for i in x])  # each map sums to its own image's change in P(dog)
    assert np.allclose(a.sum((1, 2)), left_bright(x) - left_bright(blurred), atol=1e-5)
    assert np.array_equal(a, shap_explain(left_bright, x, max_evals=120, seed=0))  # seeded
    assert np.array_equal(a[2], shap_explain(left_bright, x[2:], max_evals=120)[0])  # same map alone as in a batch
    state = np.random.get_state()[1].copy()
    shap_explain(left_bright, x[:1], max_evals=40, seed=5)
    assert np.array_equal(np.random.get_state()[1], state)  # numpy's global generator is left as it was
    with pytest.raises(ValueError, match='uint8'): shap_explain(left_bright, x.astype(float))
    with pytest.raises(ValueError, match='one P\\(dog\\)'): shap_explain(lambda b: np.zeros((len(b), 2)), x[:1], max_evals=20)


def test_figures_on_real_photos():
    root = get_settings().data
    man = pd.read_csv(root/'manifest.csv').groupby('label').head(6)
    x, feats, _ = load_images([root/p for p in man.path], size=64)
    y = (man.label == 'dog').to_numpy(int)
    def predict(b):  # image-dependent: brightness of the upper half
        return np.asarray(b, np.float32)[:, :32].mean((1, 2, 3))/255
    p = predict(x)
    for fig in (confusion_figure(y, p), reliability_figure(y, p)):
        assert isinstance(fig, Figure) and fig.axes
    idx = worst_errors(y, p, k=3)
    photos = [Image.open(root/q) for q in man.path]
    assert len([a for a in error_gallery(photos, y, p, idx).axes if a.images]) == len(idx)
    attr = shap_explain(predict, x[idx], max_evals=40)
    assert np.isfinite(attr).all() and attr.shape == (len(idx), 64, 64)
    fig = error_gallery(photos, y, p, idx, attributions=attr)
    assert len(fig.axes) == len(idx) + 1  # panels and colour bar
    fig = shap_figure(x[idx], attr)
    assert isinstance(fig, Figure) and len([a for a in fig.axes if a.images]) == 2*len(idx)
    assert set(lighting_band(feats.brightness)) <= {'dark', 'dim', 'normal'}
    with pytest.raises(ValueError, match='one attribution map per index'): error_gallery(photos, y, p, idx, attr[:1])
