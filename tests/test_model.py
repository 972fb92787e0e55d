"The pretrained backbone, its weight check, the embedding cache and ONNX/torch agreement."
import json, os, shutil
import numpy as np, pytest, torch
from parkml.model import ModelError, OnnxModel, fit_projection, EMB_DIM
from parkml.network import load_backbone, weights_path, build_parknet, export_onnx, check_agreement, compute_embeddings
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

# the engines: the same registry ONNX file through ONNX Runtime or OpenVINO
def staging_arrays(n: int = 0):
    from parkml.staging_inputs import staging_images
    imgs = staging_images(n)
    X, _, _ = load_images(imgs.path)
    return imgs, X

def test_engine_setting_switches_what_runs(trained, tmp_path, monkeypatch):
    from parkml.config import get_settings
    from parkml.model import open_model, recorded_engine, engine_records, engine_record_path, ENGINES
    from parkml.config import file_sha256
    from parkml.tracking import resolve_version, local_onnx
    path = local_onnx(resolve_version(trained['version']))
    for e in ENGINES:
        monkeypatch.setenv('PARKML_ENGINE', e)
        assert open_model(path, 1).engine == e
    monkeypatch.setenv('PARKML_ENGINE', 'auto')
    monkeypatch.setenv('PARKML_CACHE', str(tmp_path/'cache'))      # no decision recorded yet: a benchmark decides
    om = open_model(path, 1)
    recs = engine_records(get_settings())           # one decision per graph, by its sha256, beside its compiled blobs
    rec = recs[file_sha256(path)]
    assert list(recs) == [file_sha256(path)] and engine_record_path(file_sha256(path)).is_file()
    assert om.engine == rec['engine'] == recorded_engine(get_settings(), path)['engine']
    assert rec['images_per_s'][rec['engine']] == max(rec['images_per_s'].values())
    monkeypatch.setenv('PARKML_ENGINE', 'tensorrt')
    with pytest.raises(ModelError, match='unknown engine'): open_model(path, 1)

def test_openvino_agrees_with_onnxruntime_on_the_staging_images(trained):
    "Every staging image: OpenVINO (configured precision, f32) makes ONNX Runtime's decision, P(dog) and projection"
    from parkml.config import get_settings
    from parkml.model import OpenVinoModel
    from parkml.tracking import resolve_version, local_onnx
    path = local_onnx(resolve_version(trained['version']))
    imgs, X = staging_arrays()
    ref = OnnxModel(path).run(X, ['p_dog', 'proj'])
    ov = OpenVinoModel(path).run(X, ['p_dog', 'proj'])
    assert get_settings().openvino_precision == 'f32' and len(X) == len(imgs) > 500
    assert ((ov['p_dog'] >= .5) == (ref['p_dog'] >= .5)).all()
    assert np.abs(ov['p_dog'] - ref['p_dog']).max() < 1e-4 and np.abs(ov['proj'] - ref['proj']).max() < 1e-3

OPEN = ("import json, sys, numpy as np; from parkml.model import OpenVinoModel; m = OpenVinoModel(sys.argv[1], 1); "
        "x = np.load(sys.argv[2]); print(json.dumps(dict(cached=bool(m.compiled.get_property('LOADED_FROM_CACHE')), "
        "p=m.predict(x).tolist())))")

def perturb_head(path, bias: float):
    "Rewrite the ONNX graph at `path` with another head bias (the same file name, other weights)"
    import onnx
    from onnx import numpy_helper
    g = onnx.load(str(path))
    b = next(i for i in g.graph.initializer if i.name == 'head_b')
    b.CopyFrom(numpy_helper.from_array(np.array([bias], np.float32), 'head_b'))
    onnx.save(g, str(path))

def test_compiled_blob_is_reused_after_a_restart_but_never_for_a_changed_graph(trained, tmp_path):
    import json, subprocess, sys
    from parkml.tracking import resolve_version, local_onnx
    path = tmp_path/'model.onnx'
    shutil.copy(local_onnx(resolve_version(trained['version'])), path)
    _, X = staging_arrays(8)
    np.save(tmp_path/'x.npy', X)
    env = {**os.environ, 'PARKML_CACHE': str(tmp_path/'cache')}
    def open_in_new_process():
        out = subprocess.run([sys.executable, '-c', OPEN, str(path), str(tmp_path/'x.npy')], env=env,
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])
    first, again = open_in_new_process(), open_in_new_process()
    assert not first['cached'] and again['cached'] and np.allclose(first['p'], again['p'], atol=1e-6)
    perturb_head(path, 6.0)
    changed = open_in_new_process()
    assert not changed['cached']                                       # a new compilation, not the old blob
    assert np.allclose(changed['p'], OnnxModel(path).predict(X), atol=0.05)
    assert not np.allclose(changed['p'], first['p'], atol=0.05)
    assert len(list((tmp_path/'cache'/'openvino').iterdir())) == 2    # one folder per graph content
