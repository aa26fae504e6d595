"""CIFAR-10 tarballs and EDM zips: exact reads of synthetic files in the real layout; bad or unsafe ones refused."""

import hashlib
import io
import json
import os
import pickle
import re
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch

from conftest import cifar_members, dumps, make_tarball
from uniinstruct.images import cache
from uniinstruct.images.cifar import CIFAR10_MD5, load_cifar10, load_edm_zip
from uniinstruct.teachers.safe_pickle import UnsafePickleError

@pytest.mark.parametrize("style", ["py2", "py3"])
def test_cifar_round_trip(tmp_path, style):
    members, truth = cifar_members(style)
    tarball = make_tarball(tmp_path / "cifar-10-python.tar.gz", members)
    images, labels = load_cifar10(tarball, check_md5=False)
    assert images.dtype == torch.uint8 and images.shape == (10, 3, 32, 32) and labels.dtype == torch.int64
    hwc = np.concatenate([truth[f"data_batch_{i}"][0] for i in range(1, 6)])
    assert torch.equal(images, torch.from_numpy(hwc).permute(0, 3, 1, 2))
    assert labels.tolist() == sum((truth[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert images[3, 1, 5, 7] == hwc[3, 5, 7, 1]                          # green plane, row 5, column 7
    test_images, test_labels = load_cifar10(tarball, split="test", check_md5=False)
    assert torch.equal(test_images, torch.from_numpy(truth["test_batch"][0]).permute(0, 3, 1, 2))
    assert test_labels.tolist() == truth["test_batch"][1]


def test_cifar_row_layout(tmp_path):
    row = np.zeros((1, 3072), dtype=np.uint8)
    row[0, 1 * 32 + 2], row[0, 1024], row[0, 2048 + 31 * 32 + 31] = 200, 100, 50
    members, _ = cifar_members()
    members["test_batch"] = dumps({b"data": row, b"labels": [7]}, "py2")
    images, labels = load_cifar10(make_tarball(tmp_path / "c.tar.gz", members), split="test", check_md5=False)
    assert images[0, 0, 1, 2] == 200 and images[0, 1, 0, 0] == 100 and images[0, 2, 31, 31] == 50
    assert int(images.sum()) == 350 and labels.tolist() == [7]


def test_cifar_md5_and_missing_file(tmp_path):
    tarball = make_tarball(tmp_path / "cifar-10-python.tar.gz", cifar_members()[0])
    actual = hashlib.md5(tarball.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match=f"md5 {actual} does not match .* {CIFAR10_MD5}"):
        load_cifar10(tarball)
    assert load_cifar10(tarball, check_md5=False)[0].shape[0] == 10
    with pytest.raises(FileNotFoundError, match="not found .*cifar-10-python.tar.gz"):
        load_cifar10(tmp_path / "missing.tar.gz")
    with pytest.raises(ValueError, match="unknown CIFAR-10 split 'val'"):
        load_cifar10(tarball, split="val")
    (tmp_path / "junk.tar.gz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable .tar.gz"):
        load_cifar10(tmp_path / "junk.tar.gz", check_md5=False)


def test_cifar_numpy_scalar_labels(tmp_path):
    members, truth = cifar_members("py3")
    hwc, labels = truth["test_batch"]
    rows = hwc.transpose(0, 3, 1, 2).reshape(len(hwc), 3072)
    members["test_batch"] = dumps({b"data": rows, b"labels": [np.int64(v) for v in labels]}, "py3")
    assert load_cifar10(make_tarball(tmp_path / "c.tar.gz", members), "test", check_md5=False)[1].tolist() == labels


class Reduce:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("batch, message", [
    (None, "member cifar-10-batches-py/data_batch_3 is missing"),
    ([1, 2], "expected a dict, got list"),
    ({b"labels": [1]}, "no 'data' entry"),
    ({b"data": np.zeros((2, 100), np.uint8), b"labels": [1, 2]},
     r"data must be uint8 \[N, 3072\], got ndarray \(2, 100\)"),
    ({b"data": np.zeros((2, 3072), np.float32), b"labels": [1, 2]}, "data must be uint8"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}, "labels must be 2 integers in 0..9"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 10]}, "labels must be 2 integers in 0..9"),
    (b"\x80\x02junk", "not a readable pickle"),
])
def test_cifar_malformed_batches(tmp_path, batch, message):
    members, _ = cifar_members("py3")
    if batch is None:
        del members["data_batch_3"]
    else:
        members["data_batch_3"] = batch if isinstance(batch, bytes) else dumps(batch, "py3")
    with pytest.raises(ValueError, match=message):
        load_cifar10(make_tarball(tmp_path / "c.tar.gz", members), check_md5=False)


@pytest.mark.parametrize("payload, refused", [
    (lambda path: Reduce(os.system, f"touch {path}"), r"(posix|os)\.system"),
    (lambda path: Reduce(eval, f"open({str(path)!r}, 'w')"), r"builtins\.eval"),
    (lambda path: torch.zeros(2), r"torch\._utils\._rebuild_tensor_v2"),
    (lambda path: np.array([str(path)], dtype=object), "object dtypes are refused"),
])
def test_cifar_refuses_unsafe_batches(tmp_path, payload, refused):
    pwned = tmp_path / "pwned"
    members, _ = cifar_members("py3")
    members["data_batch_2"] = pickle.dumps({b"data": payload(pwned), b"labels": []}, protocol=2)
    with pytest.raises(UnsafePickleError, match=refused):
        load_cifar10(make_tarball(tmp_path / "c.tar.gz", members), check_md5=False)
    assert not pwned.exists()


def png(array, mode):
    out = io.BytesIO()
    PIL.Image.fromarray(array, mode).save(out, format="png")
    return out.getvalue()


def make_zip(path, files):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def edm_files(channels=3, labels=(3, 0, 9)):
    """Three PNGs named as EDM's dataset_tool names them, written out of order, plus dataset.json."""
    rng = np.random.default_rng(1)
    shape = (4, 4, channels) if channels == 3 else (4, 4)
    hwc = [rng.integers(0, 256, size=shape, dtype=np.uint8) for _ in range(3)]
    names = [f"00000/img{i:08d}.png" for i in range(3)]
    files = {names[i]: png(hwc[i], "RGB" if channels == 3 else "L") for i in (2, 0, 1)}
    files["dataset.json"] = json.dumps({"labels": [[n, label] for n, label in zip(names, labels)]})
    return files, np.stack(hwc)


def test_edm_zip_round_trip(tmp_path):
    files, hwc = edm_files()
    images, labels = load_edm_zip(make_zip(tmp_path / "cifar10-32x32.zip", files))
    assert images.dtype == torch.uint8 and torch.equal(images, torch.from_numpy(hwc).permute(0, 3, 1, 2))
    assert labels.dtype == torch.int64 and labels.tolist() == [3, 0, 9]
    files, grey = edm_files(channels=1)
    del files["dataset.json"]
    images, labels = load_edm_zip(make_zip(tmp_path / "grey.zip", files))
    assert torch.equal(images, torch.from_numpy(grey)[:, None]) and labels is None
    files["dataset.json"] = json.dumps({"labels": None})
    assert load_edm_zip(make_zip(tmp_path / "null.zip", files))[1] is None


def variant(change):
    files, _ = edm_files()
    change(files)
    return files


@pytest.mark.parametrize("files, message", [
    (variant(lambda f: f.update({"00000/img00000003.png": png(np.zeros((8, 8, 3), np.uint8), "RGB")})),
     r"img00000003.png is \[3, 8, 8\] \(C, H, W\) but 00000/img00000000.png is \[3, 4, 4\]"),
    (variant(lambda f: f.update({"00000/img00000003.png": png(np.zeros((4, 4), np.uint8), "L")})),
     r"is \[1, 4, 4\]"),
    (variant(lambda f: f.update({"dataset.json": "{not json"})), "dataset.json is not JSON"),
    (variant(lambda f: f.update({"dataset.json": "[]"})), "an object with a 'labels' key"),
    (variant(lambda f: f.update({"dataset.json": json.dumps({"labels": [["a.png"]]})})), r"\[file name, class\] pairs"),
    (variant(lambda f: f.update({"dataset.json": json.dumps({"labels": [["00000/img00000000.png", 1]]})})),
     "no label for 00000/img00000001.png"),
    (variant(lambda f: f.update({"dataset.json": json.dumps({"labels": [[f"00000/img{i:08d}.png", [0.5, 1.0]]
                                                                       for i in range(3)]})})),
     r"label of 00000/img00000000.png is \[0.5, 1.0\]; expected a class index"),
    (variant(lambda f: f.update({"00000/img00000003.png": b"not a png"})), "img00000003.png is not a readable image"),
    ({"dataset.json": json.dumps({"labels": None})}, "no image files"),
])
def test_edm_zip_malformed(tmp_path, files, message):
    with pytest.raises(ValueError, match=message):
        load_edm_zip(make_zip(tmp_path / "bad.zip", files))


def test_edm_zip_missing_or_not_zip(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_edm_zip(tmp_path / "missing.zip")
    (tmp_path / "fake.zip").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a zip file"):
        load_edm_zip(tmp_path / "fake.zip")


def test_decoded_cache_is_written_once_then_memory_mapped(tmp_path, capsys):
    """The first load decodes and writes ``<zip>.cache``; the next ones map it without decoding; a cache that no longer
    matches (the source changed, an array truncated or of another shape, source.json missing) is named and rebuilt."""
    files, hwc = edm_files()
    source = make_zip(tmp_path / "imagenet-64x64.zip", files)
    decoded = []

    def decode(path):
        decoded.append(path)
        return load_edm_zip(path)

    first = cache.load(source, decode)
    again = cache.load(source, decode)
    assert len(decoded) == 1 and sorted(p.name for p in cache.folder(source).iterdir()) == \
        ["images.npy", "labels.npy", "source.json"]
    assert torch.equal(again[0], torch.from_numpy(hwc).permute(0, 3, 1, 2)) and again[1].tolist() == [3, 0, 9]
    assert torch.equal(first[0], again[0]) and again[0].dtype == torch.uint8
    images = cache.folder(source) / "images.npy"
    for damage, message in [
            (lambda: images.write_bytes(images.read_bytes()[:-5]), "images.npy"),     # truncated
            (lambda: np.save(images, np.zeros((3, 3, 4, 5), np.uint8)), r"expected uint8 \[3, 3, 4, 4\]"),
            (lambda: make_zip(source, {**files, "00000/img00000001.png": png(np.zeros((4, 4, 3), np.uint8), "RGB")}),
             "another version of imagenet-64x64.zip")]:
        damage()
        images_, labels = cache.load(source, decode)
        err = capsys.readouterr().err
        assert "rebuilt, the cache does not match" in err and re.search(message, err)
        assert torch.equal(images_, load_edm_zip(source)[0]) and torch.equal(labels, load_edm_zip(source)[1])
    (cache.folder(source) / "source.json").unlink()                              # an interrupted build
    count = len(decoded)
    cache.load(source, decode)
    assert len(decoded) == count + 1
    with pytest.raises(FileNotFoundError, match="missing.zip not found"):
        cache.load(tmp_path / "missing.zip", decode)
    grey, _ = edm_files(channels=1)
    del grey["dataset.json"]
    assert cache.load(make_zip(tmp_path / "grey.zip", grey), load_edm_zip)[1] is None       # no labels: no labels.npy
    assert not (cache.folder(tmp_path / "grey.zip") / "labels.npy").exists()
