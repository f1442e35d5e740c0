"""The metadata contract round-trips and reports broken models by key."""

from __future__ import annotations

import pytest

from nordlys.daemon.contract import ModelContractError, ModelMeta, from_metadata, to_metadata


def meta(**kw) -> ModelMeta:
    base = dict(labels=("other", "aurora"), input_size=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                threshold=0.62, version="v1", backbone="mobilenet_v2", metrics={"val": {"recall": 0.97}})
    base.update(kw)
    return ModelMeta(**base)


def test_round_trip():
    m = meta()
    assert from_metadata(to_metadata(m)) == m
    assert m.positive_index == 1


def test_missing_key_is_named():
    props = to_metadata(meta())
    del props["nordlys.input_size"]
    with pytest.raises(ModelContractError, match="nordlys.input_size is missing"):
        from_metadata(props, source="m.onnx")


@pytest.mark.parametrize("key, value, match", [
    ("nordlys.threshold", "2", "threshold = 2.0: expected a number from 0 to 1"),
    ("nordlys.labels", '["aurora"]', "at least two class names"),
    ("nordlys.labels", "not json", "not valid json"),
    ("nordlys.resize", "zoom", "one of"),
    ("nordlys.contract", "9", "expected '1'"),
])
def test_bad_values_are_named(key, value, match):
    props = to_metadata(meta())
    props[key] = value
    with pytest.raises(ModelContractError, match=match):
        from_metadata(props, source="m.onnx")
