"""The student network: budget, outputs, streaming equals offline, state bytes."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from distill.finetune import load_initial_weights
from service.live import SessionState, StateError, StateMismatchError
from service.model import Predictor, stkd_student
from service.model.processing import probabilities_to_masks


def test_budget_at_352() -> None:
    model = stkd_student().eval()
    params = sum(p.numel() for p in model.parameters())
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.rand(1, 3, 352, 352))
    assert params <= 2.5e6
    assert counter.get_total_flops() <= 1.5e9


def test_outputs_and_shapes() -> None:
    model = stkd_student().eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 160, 224))
    assert out.logits.shape == (2, 1, 160, 224)
    assert [s.shape[-2:] for s in out.side_logits] == [(10, 14), (20, 28), (40, 56)]
    assert out.coarse_logits.shape == (2, 1, 5, 7)
    assert out.state.shape == (2, *model.state_shape((160, 224)))
    assert out.spatial_features.shape[-2:] == (40, 56)
    assert out.temporal_features.shape[-2:] == (5, 7)


def test_previous_frame_changes_the_output() -> None:
    """The inter-frame encoder must actually use the previous frame."""
    from tests.conftest import calibrated_student

    model = calibrated_student()
    frame, other = torch.rand(1, 3, 128, 128), torch.zeros(1, 3, 128, 128)
    other[..., 32:96, 32:96] = 1.0
    with torch.no_grad():
        alone = model(frame).logits
        paired = model(frame, model(other).state).logits
    assert (alone - paired).abs().max() > 1e-4


def test_stream_equals_offline_clip(model_store) -> None:
    model, manifest = model_store.load("test-student")
    predictor = Predictor(model, manifest, "cpu")
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (90, 120, 3), dtype=np.uint8) for _ in range(10)]
    clip = torch.stack([torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in frames])
    from service.model.processing import frames_to_tensor

    with torch.no_grad():
        offline = torch.sigmoid(model.forward_clip(frames_to_tensor(frames, manifest.input_size)[None]).logits)
        state, streamed = None, []
        for frame in frames:
            batch = frames_to_tensor([frame], manifest.input_size)
            previous = None if state is None else torch.from_numpy(state)[None]
            out = model(batch, previous)
            state = out.state[0].numpy()
            streamed.append(torch.sigmoid(out.logits))
    assert clip.shape[0] == 10
    assert (offline - torch.cat(streamed)).abs().max().item() <= 1e-4
    # And through the predictor's uint8 masks: the clip path in chunks equals frame-by-frame steps.
    masks_offline = list(predictor.predict_clip(frames, chunk=4))
    state_obj, masks_stream = None, []
    for frame in frames:
        mask, state_obj = predictor.step(frame, state_obj)
        masks_stream.append(mask)
    assert set(state_obj) == {"features"}  # what the model carries; frame counting is the session owner's
    for a, b in zip(masks_offline, masks_stream, strict=True):
        assert a.shape == (90, 120) and a.dtype == np.uint8
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_masks_at_frame_size() -> None:
    probabilities = torch.rand(2, 1, 32, 32)
    masks = probabilities_to_masks(probabilities, [(100, 50), (7, 300)])
    assert [m.shape for m in masks] == [(100, 50), (7, 300)]
    assert all(m.dtype == np.uint8 for m in masks)


def test_masks_round_like_the_reference_formula() -> None:
    """The fast conversion gives the bytes of clip(rint(p * 255)), half levels (banker's rounding) included."""
    import cv2

    probabilities = torch.rand(2, 1, 64, 48)
    probabilities[0, 0, :4, :4] = 0.5 / 255  # exactly half a level: rint rounds to even
    probabilities[0, 0, 4:8, :4] = 1.5 / 255
    probabilities[1, 0, :4, :4] = 1.0
    sizes = [(64, 48), (150, 97)]
    masks = probabilities_to_masks(probabilities, sizes)
    for mask, probability, (height, width) in zip(masks, probabilities, sizes, strict=True):
        resized = cv2.resize(probability[0].numpy(), (width, height), interpolation=cv2.INTER_LINEAR)
        assert np.array_equal(mask, np.clip(np.rint(resized * 255.0), 0, 255).astype(np.uint8))


def test_state_bytes_round_trip_and_refusals() -> None:
    features = np.random.default_rng(0).standard_normal((64, 11, 11)).astype(np.float32)
    state = SessionState("m@abc", (352, 352), 7, {"features": features}, 1.5, 2.5, 3)
    data = state.to_bytes()
    assert len(data) <= 64 * 1024
    back = SessionState.from_bytes(data).check_model("m@abc", (352, 352))
    assert back.frame == 7 and np.array_equal(back.carried["features"], features)
    assert (back.created, back.updated, back.dropped) == (1.5, 2.5, 3)
    with pytest.raises(StateMismatchError, match="model"):
        SessionState.from_bytes(data).check_model("other@def", (352, 352))
    with pytest.raises(StateMismatchError, match="input size"):
        SessionState.from_bytes(data).check_model("m@abc", (320, 320))
    with pytest.raises(StateError):
        SessionState.from_bytes(b"garbage")
    with pytest.raises(StateError, match="truncated"):
        SessionState.from_bytes(data[:-4])


def test_mixed_batch_equals_single_steps(model_store) -> None:
    predictor = Predictor(*model_store.load("test-student"), device="cpu")
    rng = np.random.default_rng(2)
    a, b, c = (rng.integers(0, 256, (64, 80, 3), dtype=np.uint8) for _ in range(3))
    _, state_b = predictor.step(b)
    masks, carried = predictor.step_batch([a, c], [None, state_b])
    alone_a, carried_a = predictor.step(a)
    alone_c, carried_c = predictor.step(c, state_b)
    assert np.abs(masks[0].astype(int) - alone_a).max() <= 1
    assert np.abs(masks[1].astype(int) - alone_c).max() <= 1
    assert np.allclose(carried[0]["features"], carried_a["features"], atol=1e-5)
    assert np.allclose(carried[1]["features"], carried_c["features"], atol=1e-5)


def test_store_refuses_tampered_weights(tmp_path) -> None:
    from service.model import ModelStoreError
    from tests.conftest import make_test_store

    store = make_test_store(tmp_path)
    weights = tmp_path / "test-student" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ModelStoreError, match="sha256"):
        store.load("test-student")
    with pytest.raises(ModelStoreError, match="not found"):
        store.load("no-such-model")


def test_store_refuses_a_config_it_does_not_know_in_one_line(tmp_path) -> None:
    """A manifest from a newer vsod (a config key this one lacks) or with a mistyped value is refused with
    the model's name and the key, not a traceback from inside the network's construction."""
    import json

    from service.model import ModelStoreError
    from tests.conftest import make_test_store

    store = make_test_store(tmp_path)
    manifest_path = tmp_path / "test-student" / "manifest.json"
    original = json.loads(manifest_path.read_text())
    for config, message in (({"refine_channels": 8}, "keys this vsod does not know (refine_channels)"),
                            ({"width_mult": "wide"}, "width_mult is 'wide', not a number >= 0")):
        manifest_path.write_text(json.dumps({**original, "config": {**original["config"], **config}}))
        with pytest.raises(ModelStoreError, match=re.escape("model 'test-student': the config")) as error:
            store.load("test-student")
        assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("source", "grown"),
    [({}, {"motion_channels": 8}), ({"motion_channels": 8}, {"motion_channels": 8, "refiner_channels": 8})],
    ids=["motion-branch", "refiner"],
)
def test_a_student_gaining_a_part_starts_exactly_as_its_source(source: dict, grown: dict) -> None:
    """The motion branch's cue and the refiner's correction start at zero, so fine-tuning a model with
    a new part (`--motion-channels`, `--refiner-channels`) starts from exactly that model's maps; the
    other way round, a part's weights with nowhere to go, is refused."""
    torch.manual_seed(0)
    before = stkd_student(**source).eval()
    if before.motion is not None:
        torch.nn.init.normal_(before.motion.cue.weight, std=0.5)  # a trained branch, not a fresh one
    after = stkd_student(**grown)
    load_initial_weights(after, before.state_dict(), "source")
    after.eval()
    clip = torch.rand(1, 3, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(after.forward_clip(clip).logits, before.forward_clip(clip).logits, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="do not fit this student"):
        load_initial_weights(stkd_student(**source), after.state_dict(), "grown")

