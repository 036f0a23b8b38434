"""Training in channels-last layout (``TrainConfig.channels_last``): the same training as the
default layout up to float rounding, the layout put back afterwards, resume still exact, and
a run saved before the option existed still resumable."""

from __future__ import annotations

import pytest
import torch

from secateurs.io import load_tree, save_tree
from secateurs.models import create_model
from secateurs.train import STATE_FILE, TrainConfig, train

FAST = dict(batch_size=64, lr=0.05, progress=False, eval_batch_size=256)


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return create_model("test_resnet", num_classes=4, in_channels=3)


def test_channels_last_trains_the_same_network_and_gives_back_the_usual_layout(tmp_path, synthetic_data):
    seen = []

    def layout(model):  # during training the convs' weights are NHWC
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        seen.append(conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous())

    plain, nhwc = _model(), _model()
    a = train(plain, *synthetic_data, TrainConfig(epochs=2, **FAST))
    b = train(nhwc, *synthetic_data, TrainConfig(epochs=2, channels_last=True, **FAST), after_step=layout)
    assert seen and all(seen)
    for (name, p), q in zip(plain.state_dict().items(), nhwc.state_dict().values()):
        assert q.is_contiguous(), name
        assert torch.allclose(p.float(), q.float(), atol=1e-4, rtol=1e-3), name
    assert [r["train_loss"] for r in b.history] == pytest.approx([r["train_loss"] for r in a.history], rel=1e-4)


def test_channels_last_resume_is_exact(tmp_path, synthetic_data):
    config = TrainConfig(epochs=2, channels_last=True, **FAST)
    full = _model()
    train(full, *synthetic_data, config, run_dir=tmp_path / "full")
    steps = {"n": 0}

    def kill_in_epoch_2(model):
        steps["n"] += 1
        if steps["n"] == 5:  # 4 steps per epoch: the first step of epoch 2
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_model(), *synthetic_data, config, run_dir=tmp_path / "cut", after_step=kill_in_epoch_2)
    resumed = _model(seed=123)
    train(resumed, *synthetic_data, config, run_dir=tmp_path / "cut", resume=True)
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_run_saved_before_the_option_existed_resumes_with_its_default(tmp_path, synthetic_data):
    train(_model(), *synthetic_data, TrainConfig(epochs=1, **FAST), run_dir=tmp_path)
    state = load_tree(tmp_path / STATE_FILE)
    del state["config"]["channels_last"]  # as written by a version without the option
    save_tree(tmp_path / STATE_FILE, state)
    result = train(_model(), *synthetic_data, TrainConfig(epochs=2, **FAST), run_dir=tmp_path, resume=True)
    assert [r["epoch"] for r in result.history] == [1, 2]
