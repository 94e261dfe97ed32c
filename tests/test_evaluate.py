"""Evaluation metrics against scikit-learn on known inputs (cfdan.training.evaluate)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score, recall_score

from cfdan.training import evaluate


@pytest.fixture
def preds():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 5, 400)
    p = np.where(rng.random(400) < 0.6, y, rng.integers(0, 5, 400))
    y[:3] = 4  # make sure every class occurs
    return y, p


def test_metrics_match_sklearn(preds):
    y, p = preds
    names = ["a", "b", "c", "d", "e"]
    m = evaluate.classification_metrics(y, p, names)
    assert m["accuracy"] == pytest.approx((y == p).mean())
    assert m["mean_class_accuracy"] == pytest.approx(balanced_accuracy_score(y, p))
    assert m["macro_f1"] == pytest.approx(f1_score(y, p, average="macro"))
    rec = recall_score(y, p, average=None)
    f1 = f1_score(y, p, average=None)
    for i, n in enumerate(names):
        assert m["per_class"][n]["recall"] == pytest.approx(rec[i])
        assert m["per_class"][n]["f1"] == pytest.approx(f1[i])
        assert m["per_class"][n]["support"] == int((y == i).sum())
    assert np.array_equal(np.array(m["confusion"]), confusion_matrix(y, p, labels=range(5)))


def test_absent_class_is_left_out_of_mean_class_accuracy():
    y = np.array([0, 0, 1, 1])
    p = np.array([0, 1, 1, 1])
    m = evaluate.classification_metrics(y, p, ["a", "b", "c"])
    assert m["mean_class_accuracy"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["per_class"]["c"]["support"] == 0


def test_bootstrap_ci_is_seeded_and_brackets_accuracy(preds):
    y, p = preds
    lo, hi = evaluate.bootstrap_accuracy_ci(y, p, 500, seed=1)
    assert (lo, hi) == evaluate.bootstrap_accuracy_ci(y, p, 500, seed=1)
    assert lo < (y == p).mean() < hi
    assert hi - lo < 0.15
    assert evaluate.bootstrap_accuracy_ci(y, p, 500, seed=2) != (lo, hi)


def test_split_metrics_loss_is_cross_entropy():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    labels = torch.tensor([0, 1, 1])
    m = evaluate.split_metrics(logits, labels, ["x", "y"], bootstrap=50)
    expected = torch.nn.functional.cross_entropy(logits, labels).item()
    assert m["loss"] == pytest.approx(expected)
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert len(m["accuracy_ci95"]) == 2


class _Toy(torch.nn.Module):
    """Logits = mean intensity of the left vs right half: flip TTA must average them."""

    def forward(self, x, return_features=False, return_attention=False):
        w = x.shape[-1] // 2
        logits = torch.stack([x[..., :w].mean((1, 2, 3)), x[..., w:].mean((1, 2, 3))], 1)
        if return_features:
            return {"logits": logits, "features": x.mean((2, 3))}
        return logits


def test_infer_batches_and_flip_tta():
    imgs = torch.randint(0, 256, (10, 1, 8, 8), dtype=torch.uint8)

    def tf(u):
        return u.float().expand(-1, 3, -1, -1) / 255

    out = evaluate.infer(_Toy(), imgs, tf, batch_size=3, features=True)
    assert out["logits"].shape == (10, 2) and out["features"].shape == (10, 3)
    tta = evaluate.infer(_Toy(), imgs, tf, batch_size=4, tta_flip=True)["logits"]
    # mirrored halves swap, so both logits become the mean of the two halves
    assert torch.allclose(tta[:, 0], tta[:, 1], atol=1e-6)
    assert not torch.allclose(out["logits"][:, 0], out["logits"][:, 1])



def test_final_evaluation_stores_indices_and_maps_but_no_pixels():
    """Records keep ``attention_index`` into the test split, never the faces (book issue 12)."""
    from cfdan.data import synthetic
    from cfdan.model import CFDAN, preset
    from cfdan.training.config import EvalConfig

    torch.manual_seed(0)
    model = CFDAN(preset("full", image_size=48, trunk_stem="cifar", trunk_width=8,
                         trunk_blocks=(1, 1, 1, 1), channel_groups=4))
    test = synthetic.load("test", sizes=(8, 8, 24))

    def tf(u):
        return u.float().expand(-1, 3, -1, -1) / 255

    cfg = EvalConfig(bootstrap=0, tsne_samples=5, attention_images=4)
    _, arrays = evaluate.final_evaluation(model, test, tf, cfg, device=torch.device("cpu"),
                                          amp=False, channels_last=False, batch_size=16)
    assert not [k for k in arrays if "image" in k]
    assert not [k for k, v in arrays.items() if v.dtype == np.uint8 and v.ndim >= 2]
    idx = arrays["attention_index"]
    assert len(idx) == 4 and np.array_equal(arrays["attention_labels"], test.labels.numpy()[idx])
    for key in ("attention_spatial", "attention_channel", "attention_fused"):
        assert arrays[key].shape == (4, 6, 6)
    assert str(arrays["attention_definition"]) == "v2"
