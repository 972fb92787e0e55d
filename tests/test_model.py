"The pretrained backbone, its weight check, the embedding cache and ONNX/torch agreement."
import shutil
import numpy as np, pytest, torch
from parkml.model import ModelError, OnnxModel, compute_embeddings, fit_projection, EMB_DIM
from parkml.network import load_backbone, weights_path, build_parknet, export_onnx, check_agreement
from parkml.data import read_imageset, assign_splits, load_images

def test_weights_are_checked(tmp_path):
    bad = tmp_path/'weights.pth'
    data = bytearray(weights_path().read_bytes()); data[-100] ^= 0xFF; bad.write_bytes(bytes(data))
    with pytest.raises(ModelError, match='sha256'): load_backbone(bad)
    with pytest.raises(ModelError, match='not found'): load_backbone(tmp_path/'nothing.pth')

def test_pretrained_backbone_knows_cats_and_dogs(manifest, data_root):
    "ImageNet logits of the real backbone put petpark dogs in dog classes (151-268) and cats in cat classes (281-285)"
    net = load_backbone()
    rows = manifest[manifest.split == 'test'].groupby('label').head(16)
    X, _, _ = load_images([data_root/p for p in rows.path])
    with torch.no_grad(): top = net(((torch.from_numpy(X).float() - 127) / 128).permute(0, 3, 1, 2)).argmax(1).numpy()
    dog = (rows.label == 'dog').values
    assert ((top[dog] >= 151) & (top[dog] <= 268)).mean() > 0.8
    assert ((top[~dog] >= 281) & (top[~dog] <= 285)).mean() > 0.5

def test_embedding_cache_and_onnx_agreement(tmp_runs, data_root, monkeypatch):
    monkeypatch.setenv('PARKML_CACHE', str(tmp_runs/'cache'))   # an empty cache of its own
    ds = assign_splits(read_imageset())
    small = ds.subset(ds.df.index.isin(ds.df.groupby('label').head(24).index))
    e1 = compute_embeddings(small, progress=False)
    files = list((tmp_runs/'cache'/'embeddings').glob('*.npz'))
    assert len(files) == 1 and small.version[:20] in files[0].name
    e2 = compute_embeddings(small, progress=False)
    assert np.array_equal(np.stack(e1.emb.values), np.stack(e2.emb.values))
    E = np.stack(e1.emb.values); y = small.df.set_index('sha').loc[e1.index].y.values
    w = np.random.default_rng(0).normal(0, .02, EMB_DIM).astype(np.float32)
    net = build_parknet(w, np.float32(0.1), *fit_projection(E))
    om = OnnxModel(export_onnx(net, tmp_runs/'net.onnx'))
    X, _, _ = load_images(small.df.path)
    assert check_agreement(net, om, X) < 1e-4
    assert np.allclose(om.run(X, ['emb'])['emb'], np.stack(e1.loc[small.df.sha].emb.values), atol=1e-3)

def test_serving_modules_do_not_load_torch():
    "The service, staging, daily analysis and CLI run ONNX only: importing them must not import torch"
    import subprocess, sys
    code = "import sys, parkml.service, parkml.staging, parkml.daily, parkml.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == 'False'
