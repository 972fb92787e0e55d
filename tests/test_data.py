"The data version, splits and bad-data handling on real petpark images."
import io, shutil
import numpy as np, pandas as pd, pytest
from PIL import Image
from parkml.data import (read_imageset, assign_splits, data_version, load_images, decode_image, DataError, ImageSet,
                         split_summary)

def make_manifest_set(dst, data_root, manifest, n=12):
    "Copy n real images (half cats) and a manifest into `dst`"
    rows = pd.concat([manifest[manifest.label == 'cat'].head(n // 2), manifest[manifest.label == 'dog'].head(n // 2)])
    (dst/'images').mkdir(parents=True)
    for p in rows.path: shutil.copy(data_root/p, dst/p)
    rows.to_csv(dst/'manifest.csv', index=False)
    return rows

def test_version_stable_under_reordering_and_sensitive_to_pixels_and_labels(tmp_path, data_root, manifest):
    rows = make_manifest_set(tmp_path, data_root, manifest)
    v0 = read_imageset(tmp_path).version
    rows.sample(frac=1, random_state=0).to_csv(tmp_path/'manifest.csv', index=False)
    assert read_imageset(tmp_path).version == v0          # listing order does not matter
    rows.to_csv(tmp_path/'manifest.csv', index=False)
    p = tmp_path/rows.path.iloc[0]
    img = np.array(Image.open(p)); img[0, 0] = 255 - img[0, 0]
    Image.fromarray(img).save(p, format='PNG')            # one pixel changed (stored losslessly)
    v1 = read_imageset(tmp_path).version
    assert v1 != v0
    rows2 = rows.copy(); rows2.loc[rows2.index[1], 'label'] = 'dog' if rows2.label.iloc[1] == 'cat' else 'cat'
    rows2.to_csv(tmp_path/'manifest.csv', index=False)
    assert read_imageset(tmp_path).version not in (v0, v1)  # one label changed

def test_folder_per_class_layout(tmp_path, data_root, manifest):
    for lab in ('cat', 'dog'):
        (tmp_path/lab/'sub').mkdir(parents=True)
        for p in manifest[manifest.label == lab].path.head(5): shutil.copy(data_root/p, tmp_path/lab/'sub'/Path(p).name)
    ds = read_imageset(tmp_path)
    assert len(ds) == 10 and sorted(ds.df.label.value_counts().to_dict().items()) == [('cat', 5), ('dog', 5)]
    ds = assign_splits(ds)
    assert set(ds.df.subset) <= {'train', 'val', 'stage', 'holdout'}

def test_bad_data_errors_name_the_file_or_are_skipped_and_counted(tmp_path, data_root, manifest):
    rows = make_manifest_set(tmp_path, data_root, manifest)
    bad = rows.copy()
    bad.loc[bad.index[0], 'path'] = 'images/missing.jpg'
    bad.loc[bad.index[1], 'label'] = 'rabbit'
    (tmp_path/rows.path.iloc[2]).write_bytes(b'\xff\xd8 not really a jpeg')
    bad.to_csv(tmp_path/'manifest.csv', index=False)
    with pytest.raises(DataError, match='missing.jpg'): read_imageset(tmp_path, skip_bad=False)
    ds = read_imageset(tmp_path, skip_bad=True, check_decode=True)
    reasons = {Path(s['path']).name: s['reason'] for s in ds.skipped}
    assert len(ds) == len(rows) - 3 and len(ds.skipped) == 3
    assert 'does not exist' in reasons['missing.jpg'] and 'rabbit' in reasons[Path(rows.path.iloc[1]).name]
    assert 'corrupt' in reasons[Path(rows.path.iloc[2]).name] or 'not an image' in reasons[Path(rows.path.iloc[2]).name]
    with pytest.raises(DataError, match=Path(rows.path.iloc[2]).name):
        load_images([tmp_path/rows.path.iloc[2]])
    X, F, badl = load_images([tmp_path/rows.path.iloc[2], tmp_path/rows.path.iloc[3]], skip_bad=True)
    assert len(X) == 1 and len(badl) == 1

def test_splits_are_deterministic_and_cover_the_test_split(data_root):
    ds = assign_splits(read_imageset())
    again = assign_splits(ImageSet(ds.df.sample(frac=1, random_state=5).drop(columns=['subset']), ds.root))
    assert ds.df.set_index('sha').subset.sort_index().equals(again.df.set_index('sha').subset.sort_index())
    s = split_summary(ds)
    assert s.loc[['stage', 'holdout']].values.sum() == 2000 and s.loc[['train', 'val']].values.sum() == 4000
    assert 0.1 < s.loc['val'].sum() / 4000 < 0.2 and 0.25 < s.loc['stage'].sum() / 2000 < 0.35
    assert (ds.df[ds.df.subset.isin(['stage', 'holdout'])].split == 'test').all()

from pathlib import Path
