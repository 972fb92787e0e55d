"Tests of parkml.cctv on real petpark photos"
import math
import numpy as np, pandas as pd, pytest, cv2
from PIL import Image
from parkml.config import get_settings
from parkml.cctv import (CONDITIONS, SEVERITIES, LEVELS, apply_condition, condition_strength, show_conditions)

SEEDED = ['night', 'fog', 'motion_blur', 'noise', 'occlusion']   # conditions that draw from the seed


@pytest.fixture(scope='module')
def photos():
    "Eight test-split photos: four cats, four dogs, of various sizes"
    cfg = get_settings()
    m = pd.read_csv(cfg.data/'manifest.csv')
    rows = m[m.split == 'test'].groupby('label').head(4)
    return [Image.open(cfg.data/p).convert('RGB') for p in rows.path]


def grey(img): return np.asarray(img.convert('L'), dtype=float)

def sharpness(img): return cv2.Laplacian(grey(img), cv2.CV_64F).var()


@pytest.mark.parametrize('name', CONDITIONS)
def test_changes_at_severity_1_and_keeps_rgb_size(photos, name):
    for img in photos:
        out = apply_condition(img, name, 1, seed=0)
        assert out.mode == 'RGB' and out.size == img.size
        assert condition_strength(img, out) > 0.005, name


@pytest.mark.parametrize('name', CONDITIONS)
def test_reproducible_with_seed(photos, name):
    img = photos[1]
    a, b = apply_condition(img, name, 2, seed=7), apply_condition(img, name, 2, seed=7)
    assert a.tobytes() == b.tobytes()
    other = apply_condition(img, name, 2, seed=8)
    if name in SEEDED: assert other.tobytes() != a.tobytes(), name
    else: assert other.tobytes() == a.tobytes(), name   # jpeg draws nothing from the seed


@pytest.mark.parametrize('name', CONDITIONS)
def test_stronger_with_severity(photos, name):
    for i, img in enumerate(photos):
        s = [condition_strength(img, apply_condition(img, name, sev, seed=i)) for sev in SEVERITIES]
        assert s[0] < s[1] < s[2], (name, i, s)


@pytest.mark.parametrize('name', CONDITIONS)
def test_fractional_severity_lies_between_levels(photos, name):
    img = photos[2]
    s1, s15, s2 = (condition_strength(img, apply_condition(img, name, sev, seed=3)) for sev in (1, 1.5, 2))
    assert s1 < s15 < s2, (name, s1, s15, s2)
    out = apply_condition(img, name, 4.5, seed=3)   # beyond the standard levels still works
    assert out.size == img.size and condition_strength(img, out) > s2


@pytest.mark.parametrize('name', CONDITIONS)
def test_severity_0_is_identity(photos, name):
    img = photos[0]
    out = apply_condition(img, name, 0, seed=5)
    assert out.tobytes() == img.tobytes() and out is not img


def test_non_rgb_input_gives_rgb(photos):
    out = apply_condition(photos[0].convert('L'), 'fog', 1)
    assert out.mode == 'RGB' and out.size == photos[0].size


@pytest.mark.parametrize('kw, words', [(dict(name='rain'), ['rain', *CONDITIONS]),
                                       (dict(name='fog', severity=-0.5), ['severity', '-0.5', '1, 2, 3']),
                                       (dict(name='fog', severity=float('nan')), ['severity'])])
def test_bad_arguments_raise(photos, kw, words):
    with pytest.raises(ValueError) as e: apply_condition(photos[0], **kw)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_night_darkens_and_dusk_stays_visible(photos):
    for img in photos:
        b = [grey(apply_condition(img, 'night', s, seed=1)).mean() for s in (0, *SEVERITIES)]
        assert b[0] > b[1] > b[2] > b[3], b
        assert 0.35 * b[0] < b[1] < 0.85 * b[0], b   # severity 1 is dusk: darker, not black


def test_fog_brightens_and_flattens(photos):
    for img in photos:
        outs = [grey(apply_condition(img, 'fog', s, seed=1)) for s in (0, *SEVERITIES)]
        means, stds = [o.mean() for o in outs], [o.std() for o in outs]
        assert means[0] < means[1] < means[2] < means[3], means
        assert stds[0] > stds[1] > stds[2] > stds[3], stds


def test_fog_denser_at_top(photos):
    "On a flat dark frame the haze lifts the top third more than the bottom third, for several seeds"
    flat = Image.new('RGB', photos[3].size, (60, 60, 60))
    for seed in range(4):
        moved = grey(apply_condition(flat, 'fog', 2, seed=seed)) - 60
        third = moved.shape[0] // 3
        assert moved[:third].mean() > moved[-third:].mean() > 0, seed


def test_motion_blur_lowers_sharpness(photos):
    for img in photos:
        v = [sharpness(apply_condition(img, 'motion_blur', s, seed=2)) for s in (0, *SEVERITIES)]
        assert v[0] > v[1] > v[2] > v[3], v


def test_occlusion_covers_the_intended_share(photos):
    for seed, img in enumerate(photos):
        for s in SEVERITIES:
            changed = (np.asarray(apply_condition(img, 'occlusion', s, seed=seed)) != np.asarray(img)).any(axis=2)
            assert abs(changed.mean() - LEVELS['occlusion']['share'][s]) < 0.03, (seed, s, changed.mean())


def test_condition_strength(photos):
    img = photos[0]
    assert condition_strength(img, img.copy()) == 0
    black, white = Image.new('RGB', (16, 16)), Image.new('RGB', (16, 16), (255, 255, 255))
    assert math.isclose(condition_strength(black, white), 1.0)
    with pytest.raises(ValueError): condition_strength(img, img.resize((10, 10)))


def test_show_conditions_grid(photos):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig = show_conditions(photos[0], seed=1)
    assert len(fig.axes) == len(CONDITIONS) * 4
    assert [ax.get_ylabel() for ax in fig.axes[::4]] == list(CONDITIONS)
    plt.close(fig)
