"""The onnxruntime wrapper on real (tiny) ONNX models."""

from __future__ import annotations

import numpy as np
import pytest
import structlog

from nordlys.daemon.classifier import Classifier, ModelError, choose_providers
from tests.tiny_models import make_green_model


def solid(rgb, size=32):
    return np.full((size, size, 3), rgb, dtype=np.uint8)


def test_scores_green_high_and_grey_low(green_model):
    clf = Classifier(green_model, threads=1, batch_size=2)
    scores = clf.score([solid((0, 255, 0)), solid((128, 128, 128)), solid((255, 0, 0)), solid((20, 200, 40))])
    assert scores.shape == (4,) and scores.dtype == np.float32
    assert scores[0] > 0.99 and scores[3] > 0.9
    assert scores[1] < 0.2 and scores[2] < 0.01
    assert clf.meta.threshold == 0.5 and clf.version == "green-test-1"


def test_batching_does_not_change_scores(green_model):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(7)]
    one = Classifier(green_model, batch_size=1).score(images)
    many = Classifier(green_model, batch_size=4).score(images)
    np.testing.assert_allclose(one, many, atol=1e-6)


def test_normalisation_follows_metadata(tmp_path):
    # mean 1, std 0.5 on a white image: (1 - 1) / 0.5 = 0 on every channel -> logit = bias
    from nordlys.daemon.contract import ModelMeta, to_metadata
    props = to_metadata(ModelMeta(labels=("other", "aurora"), input_size=16, mean=(1.0, 1.0, 1.0),
                                  std=(0.5, 0.5, 0.5), threshold=0.5, version="n"))
    path = make_green_model(tmp_path / "n.onnx", size=16, bias=1.0, metadata=props)
    score = Classifier(path).score([solid((255, 255, 255), 16)])[0]
    assert score == pytest.approx(1 / (1 + np.exp(-1.0)), abs=1e-5)


def test_provider_choice_logged_and_cpu_fallback(green_model):
    with structlog.testing.capture_logs() as logs:
        clf = Classifier(green_model, providers=["CUDAExecutionProvider"])
    assert clf.provider in ("CUDAExecutionProvider", "CPUExecutionProvider")
    ready = [e for e in logs if e["event"] == "classifier ready"]
    assert ready and ready[0]["provider"] == clf.provider


def test_choose_providers():
    assert choose_providers(["auto"], ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers(["auto"], ["CUDAExecutionProvider", "CPUExecutionProvider"]) == \
        ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(["CUDAExecutionProvider"], ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_model_without_contract_is_refused(tmp_path):
    path = make_green_model(tmp_path / "bare.onnx", metadata={"author": "someone"})
    with pytest.raises(ModelError, match="nordlys.contract is missing"):
        Classifier(path)


def test_input_size_mismatch_is_refused(tmp_path):
    from nordlys.daemon.contract import ModelMeta, to_metadata
    props = to_metadata(ModelMeta(labels=("other", "aurora"), input_size=64, mean=(0, 0, 0), std=(1, 1, 1),
                                  threshold=0.5, version="x"))
    path = make_green_model(tmp_path / "m.onnx", size=32, metadata=props)
    with pytest.raises(ModelError, match=r"expected \(N, 3, 64, 64\)"):
        Classifier(path)


def test_not_an_onnx_file(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot load ONNX model"):
        Classifier(path)


def test_preprocess_is_the_contracts_normalisation_per_channel(tmp_path):
    # distinct means and stds per channel catch a channel mix-up or an NHWC/NCHW slip
    from nordlys.daemon.contract import ModelMeta, to_metadata
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    props = to_metadata(ModelMeta(labels=("other", "aurora"), input_size=8, mean=mean, std=std,
                                  threshold=0.5, version="p"))
    clf = Classifier(make_green_model(tmp_path / "p.onnx", size=8, metadata=props))
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(3)]
    batch = clf.preprocess(images)
    assert batch.shape == (3, 3, 8, 8) and batch.dtype == np.float32 and batch.flags.c_contiguous
    for n, image in enumerate(images):
        for c in range(3):
            expected = (image[:, :, c].astype(np.float64) / 255 - mean[c]) / std[c]
            np.testing.assert_allclose(batch[n, c], expected, atol=1e-5)
