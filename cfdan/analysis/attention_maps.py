"""Fig. 8 of the results chapter (§4.4): the attention maps of a few fixed test faces.

Records hold the maps and the faces' indices into the test split, never pixels: the faces are
read from the dataset when the book is built (:func:`attention_faces`), and the maps are drawn
alone where it is not here. :func:`map_similarity` says how much the maps depend on the face;
:func:`attention_figures` builds the chapter's figures, :func:`attention_facts` the numbers its
prose quotes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from cfdan import results
from cfdan.analysis import book

ATTENTION_V2 = "v2"
"""The Fig. 8 definition of :func:`cfdan.model.network.attention_maps` (chapter 2)."""
ATTENTION_OLD = "token norms (old records)"
"""What records without ``attention_definition`` hold: min-max-scaled token norms."""
DATASET_NAMES = {"ferplus": "FERPlus", "rafdb": "RAF-DB", "affectnet": "AffectNet",
                 "synthetic": "the synthetic set"}


def attention_definition(arrays: Mapping[str, np.ndarray]) -> str:
    """Which definition made a record's Fig. 8 maps: ``"v2"`` or :data:`ATTENTION_OLD`."""
    d = arrays.get("attention_definition")
    return str(d) if d is not None else ATTENTION_OLD


def _test_split(rec: Mapping[str, Any], root: str | os.PathLike[str] | None):
    """The run's test split as it was evaluated (dataset, label mode, ``max_eval`` subset)."""
    from pathlib import Path

    from cfdan import paths
    from cfdan.data import load_dataset
    from cfdan.data.splits import subsample

    dcfg = (rec.get("config") or {}).get("data") or {}
    dataset = (rec.get("data") or {}).get("dataset") or dcfg.get("dataset", "")
    name = DATASET_NAMES.get(dataset, dataset)
    if dataset == "ferplus":
        where: Path | None = paths.ferplus_root(root)
    elif dataset == "synthetic":
        where = None
    else:
        given = root or dcfg.get("root")
        where = Path(given) if given else None
        if where is None:
            return None, f"{name} has no root folder here"
    if where is not None and not where.exists():
        return None, f"{name} is not at {where}"
    ft = load_dataset(dataset, where, "test", image_size=int(dcfg.get("image_size", 224)),
                      label_mode=dcfg.get("label_mode", "majority"), seed=0,
                      **(dcfg.get("options") or {}))
    return subsample(ft, int(dcfg.get("max_eval") or 0)), name


def attention_faces(run_id: str, experiment: str | None = None,
                    root: str | os.PathLike[str] | None = None) -> tuple[np.ndarray | None, str]:
    """Fig. 8's faces: the ``attention_index`` rows of the run's test split, read from its
    dataset now (records hold indices, never pixels), as uint8 (k, C, H, W).

    Returns ``(faces, note)``; ``faces`` is None, and ``note`` says why, when the dataset is
    not here or its test split differs from the run's (fingerprint or labels). ``root``
    overrides where the dataset is read (default: :func:`cfdan.paths.ferplus_root` for
    FERPlus, the record's ``data.root`` otherwise).
    """
    from cfdan.data.types import DataError

    rec = results.get_record(run_id, experiment)
    arr = results.load_arrays(run_id, experiment)
    if "attention_index" not in arr:
        return None, "the record names no faces (no attention_index)"
    dataset = (rec.get("data") or {}).get("dataset", "")
    name = DATASET_NAMES.get(dataset, dataset)
    try:
        split, why = _test_split(rec, root)
    except (DataError, OSError, ValueError, TypeError) as exc:
        return None, f"{name} could not be read ({exc})"
    if split is None:
        return None, why
    want = ((rec.get("data") or {}).get("fingerprint") or {}).get("test")
    if want is not None and str(split.fingerprint) != str(want):
        return None, (f"the {name} test split here (fingerprint {split.fingerprint}) is not "
                      f"the run's ({want})")
    idx = np.asarray(arr["attention_index"], dtype=np.int64)
    if len(idx) and idx.max() >= len(split):
        return None, f"the {name} test split here has {len(split)} images, fewer than the run's"
    labels = arr.get("attention_labels")
    if labels is not None and not np.array_equal(split.labels.numpy()[idx], labels):
        return None, f"the labels of the {name} test faces here differ from the run's"
    return split.images[idx].numpy(), f"read from the {name} test split at build time"


def _attention_caption(faces_note: str, definition: str, has_faces: bool) -> str:
    """The line under Fig. 8: where the faces come from and what the maps are."""
    where = (f"Faces {faces_note} (records keep their indices, never pixels)." if has_faces
             else f"Maps alone: {faces_note}; records keep the faces' indices, never pixels.")
    if definition == ATTENTION_V2:
        what = ("Maps (v2, chapter 2): spatial = attention each cell receives in the last "
                "layer; channel, fused = each cell's share of the predicted class's logit (red "
                "for, blue against). Each map is scaled to its own largest |value|, so colours "
                "compare cells within a face, not faces.")
    else:
        what = ("Maps: token norms after the residual, min-max scaled per face (old records, "
                "made before the v2 definition of chapter 2; not attention).")
    return f"{where} {what}"


def _upsample(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor(np.asarray(m, dtype=np.float32))[None, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def _map_style(name: str, m: np.ndarray, definition: str) -> tuple[np.ndarray, dict[str, Any]]:
    """The map as drawn and its imshow colour scale, the same for every face of a column, so
    one colour bar reads them all: v2 maps are scaled to their own largest (absolute) value,
    sequential for attention received, diverging around 0 for class-activation maps; old maps
    were stored min-max scaled per face and are drawn as stored."""
    if definition != ATTENTION_V2:
        return m, {"cmap": "jet", "vmin": 0.0, "vmax": 1.0}
    if name == "spatial":
        top = float(m.max())
        return m / top if top > 0 else m, {"cmap": "inferno", "vmin": 0.0, "vmax": 1.0}
    lim = float(np.abs(m).max()) or 1.0
    return m / lim, {"cmap": "RdBu_r", "vmin": -1.0, "vmax": 1.0}


def _colour_bar_label(name: str, definition: str) -> str:
    """What a column's colour bar measures (:func:`_map_style`'s per-face scaling)."""
    if definition != ATTENTION_V2:
        return "min-max per face"
    if name == "spatial":
        return "÷ the face's max"
    return "against (−) / for (+) the class\n÷ the face's max |value|"


def _add_colour_bar(ax, style: Mapping[str, Any], label: str, alpha: float = 1.0) -> None:
    """A horizontal colour bar under ``ax`` (a child axes: ``fig.axes`` keeps its grid order),
    as translucent as the maps it reads."""
    import matplotlib as mpl

    cax = ax.inset_axes((0.05, -0.2, 0.9, 0.07))
    norm = mpl.colors.Normalize(vmin=style["vmin"], vmax=style["vmax"])
    bar = ax.figure.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=style["cmap"]), cax=cax,
                             orientation="horizontal", alpha=alpha)
    bar.set_ticks([style["vmin"], (style["vmin"] + style["vmax"]) / 2, style["vmax"]])
    bar.ax.tick_params(labelsize=6, length=2, pad=1)
    bar.set_label(label, fontsize=6, labelpad=1)


def plot_attention(axes, run_id: str, experiment: str | None = None, k: int = 4,
                   root: str | os.PathLike[str] | None = None, show_faces: bool = True) -> str:
    """Fig. 8 on a (k, 4) grid of axes: face, spatial, channel and fused maps of ``k`` fixed
    test faces, the maps upsampled onto the face. The faces are read from the dataset now
    (:func:`attention_faces`); without it the maps are drawn alone. Returns the caption line
    (where the faces come from, which map definition the record holds). ``show_faces=False``
    draws the maps alone (the book's committed outputs: dataset faces are not redistributed)."""
    rec = results.get_record(run_id, experiment)
    arr = results.load_arrays(run_id, experiment)
    names = [str(c) for c in arr["class_names"]]
    definition = attention_definition(arr)
    if show_faces:
        faces, note = attention_faces(run_id, experiment, root)
    else:
        faces, note = None, "dataset faces are not redistributed with this book; rerun the chapter with `-p show_ferplus_images True` (papermill) to see them on your machine"
    side = int(((rec.get("config") or {}).get("data") or {}).get("image_size", 48))
    v2 = definition == ATTENTION_V2
    cols = [("face", None),
            ("spatial", "attention_spatial"), ("channel", "attention_channel"),
            ("fused", "attention_fused")]
    titles = {"face": "face", "spatial": "spatial" + (": received" if v2 else " (norm)"),
              "channel": "channel" + (": CAM" if v2 else " (norm)"),
              "fused": "fused" + (": CAM" if v2 else " (norm)")}
    n = len(arr.get("attention_index", arr.get("attention_labels", [])))
    for i in range(min(k, n)):
        face = None
        if faces is not None:
            face = faces[i].astype(float).mean(0) / 255.0
        size = face.shape if face is not None else (side, side)
        for j, (name, key) in enumerate(cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[name], fontsize=8)
            if face is not None:
                ax.imshow(face, cmap="gray", vmin=0, vmax=1)
            if key is None:
                if face is None:
                    ax.text(0.5, 0.5, "face not\nread here", ha="center", va="center",
                            fontsize=7, transform=ax.transAxes)
                continue
            if key not in arr:
                ax.text(0.5, 0.5, f"no {name}\nbranch", ha="center", va="center", fontsize=7,
                        transform=ax.transAxes)
                continue
            m, style = _map_style(name, _upsample(arr[key][i], size), definition)
            alpha = 0.5 if face is not None else 1.0
            ax.imshow(m, alpha=alpha, **style)
            if i == min(k, n) - 1:
                _add_colour_bar(ax, style, _colour_bar_label(name, definition), alpha)
        true, pred = names[arr["attention_labels"][i]], names[arr["attention_preds"][i]]
        axes[i, 0].set_ylabel(f"{true}\n(pred {pred})", fontsize=8)
    return _attention_caption(note, definition, faces is not None)


def attention_similarity(run_id: str, experiment: str | None = None) -> dict[str, float]:
    """How much Fig. 8's maps depend on the face, for a record's stored maps
    (:func:`map_similarity` of its arrays)."""
    return map_similarity(results.load_arrays(run_id, experiment))


def map_similarity(arr: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Per map kind (spatial, channel, fused), the mean Pearson correlation between the
    ``attention_<kind>`` maps of every pair of stored faces (near 1: nearly the same map for
    every face; constant maps are left out; NaN if fewer than two remain)."""
    out: dict[str, float] = {}
    for name in ("spatial", "channel", "fused"):
        maps = arr.get(f"attention_{name}")
        if maps is None or len(maps) < 2:
            out[name] = float("nan")
            continue
        flat = np.asarray(maps, dtype=np.float64).reshape(len(maps), -1)
        flat = flat[flat.std(axis=1) > 0]  # a constant map has no correlation
        if len(flat) < 2:
            out[name] = float("nan")
            continue
        r = np.corrcoef(flat)
        out[name] = float(r[np.triu_indices(len(flat), k=1)].mean())
    return out


def attention_figures(shown: Mapping[str, str], k: int = 4,
                      root: str | None = None, show_faces: bool = True) -> list:
    """Fig. 8: one figure per shown run (face, spatial, channel and fused maps of ``k`` faces,
    :func:`plot_attention`), with a line under it that says where the faces come
    from (read from the dataset at build time, or absent and why) and which map definition
    the record holds. The layout is the same with and without the faces."""
    import textwrap

    import matplotlib.pyplot as plt

    figs = []
    for exp, run_id in shown.items():
        height = 1.85 * k + 0.9  # rows, title, and the caption under the colour bars
        fig, axes = plt.subplots(k, 4, figsize=(7, height), squeeze=False)
        caption = plot_attention(axes, run_id, exp, k=k, root=root, show_faces=show_faces)
        fig.suptitle(book.run_label(exp, book.run_variant(exp, run_id), short=True))
        fig.tight_layout(rect=(0, 0.8 / height, 1, 1))
        fig.text(0.01, 0.005, textwrap.fill(caption, 120), ha="left", va="bottom", fontsize=6.5)
        figs.append(fig)
    return figs


def attention_facts(shown: Mapping[str, str],
                    expected: Sequence[str] = book.PROFILE_EXPERIMENTS) -> dict[str, Any]:
    """:func:`attention_similarity` of each shown run, for the prose: keys
    ``attention_r_<prefix>_<map>`` (``<prefix>``: :data:`cfdan.analysis.book.FACT_PREFIX`,
    e.g. ``cpu``, ``paper``) as two-decimal strings, and ``attention_faces_<prefix>`` (faces
    stored); "n/a" for an ``expected`` experiment without a shown run or stored maps."""
    out: dict[str, Any] = {}
    for exp in (*expected, *(e for e in shown if e not in expected)):
        pre = book.FACT_PREFIX.get(exp, exp)
        sim: dict[str, float] = {}
        faces: Any = "n/a"
        if exp in shown:
            try:
                arrays = results.load_arrays(shown[exp], exp)
                sim = map_similarity(arrays)
                faces = len(arrays.get("attention_index", []))
            except (FileNotFoundError, KeyError):
                pass
        for name in ("spatial", "channel", "fused"):
            r = sim.get(name, float("nan"))
            out[f"attention_r_{pre}_{name}"] = f"{r:.2f}" if np.isfinite(r) else "n/a"
        out[f"attention_faces_{pre}"] = faces
    return out


PHOTO_SUFFIX = ".photo.npz"
"""A run's Fig. 8 maps over the astronaut photo, stored beside its record (issue 29): made on
the machine that holds the run's weights (``python -m cfdan photo-maps``), so the book can draw
a model whose weights it does not have (the paper-profile runs of a GPU call)."""
PHOTO_MAPS = ("spatial", "channel", "fused")


def photo_maps(checkpoint: str | os.PathLike[str] | None = None, photo=None
               ) -> dict[str, np.ndarray] | None:
    """Fig. 8 over a face a reader may see: the largest face MTCNN finds in ``photo`` (a PIL
    image; default scikit-image's public-domain astronaut), cropped as ``python -m cfdan
    predict`` crops it, through the model in ``checkpoint`` (default the shipped cpu-profile
    model). Returns ``face`` (grey, the model's input size), the raw ``spatial``, ``channel``
    and ``fused`` maps (a branch the model lacks is left out), ``probs``, ``class_names``,
    ``image_size`` and ``run_id``; None when no face is found."""
    from PIL import Image

    from cfdan import predict

    if photo is None:
        from skimage import data as skdata

        photo = Image.fromarray(skdata.astronaut())
    model, meta = predict.load_checkpoint(checkpoint)
    boxes = predict.detect_faces(photo)
    if not boxes:
        return None
    crop = photo.crop(tuple(int(v) for v in boxes[0][:4]))
    with torch.no_grad():
        out = model(predict.face_batch(meta, [crop]), return_attention=True)
    size = int(meta["image_size"])
    maps = {"face": np.asarray(crop.convert("L").resize((size, size)), np.float32) / 255.0,
            "probs": torch.softmax(out["logits"], 1)[0].numpy(),
            "class_names": np.array(list(meta["class_names"])),
            "image_size": np.array(size), "run_id": np.array(str(meta.get("run_id", "")))}
    for name in PHOTO_MAPS:
        if out["attention"][name] is not None:
            maps[name] = out["attention"][name][0].numpy()
    return maps


def save_photo_maps(maps: Mapping[str, np.ndarray], path: str | os.PathLike[str]) -> None:
    """Write :func:`photo_maps`' arrays to ``path`` (compressed npz, atomically)."""
    from cfdan import atomic

    with atomic.atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **maps)


def stored_photo_maps(root: str | os.PathLike[str] | None = None
                      ) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Every ``<experiment>/<run_id>.photo.npz`` of the results store with a record beside
    it, as ``("<experiment>/<run_id>", arrays)``, sorted."""
    from cfdan import paths

    out = []
    for f in sorted(paths.results_dir(root).glob(f"*/*{PHOTO_SUFFIX}")):
        if f.with_name(f.name.removesuffix(PHOTO_SUFFIX) + ".json").is_file():
            with np.load(f, allow_pickle=False) as z:
                out.append((f"{f.parent.name}/{f.name.removesuffix(PHOTO_SUFFIX)}",
                            {k: z[k] for k in z.files}))
    return out


def photo_rows(root: str | os.PathLike[str] | None = None
               ) -> list[tuple[str, dict[str, np.ndarray]]]:
    """The rows of chapter 4's Fig. 8 over the astronaut, labelled: the shipped cpu-profile
    model's maps (computed here), then every stored run's (:func:`stored_photo_maps`)."""
    rows = []
    maps = photo_maps()
    if maps is not None:
        rows.append((f"shipped cpu-profile model ({int(maps['image_size'])} px)", maps))
    rows += [(f"{key} ({int(m['image_size'])} px)", m) for key, m in stored_photo_maps(root)]
    return rows


def photo_facts(root: str | os.PathLike[str] | None = None) -> dict[str, int]:
    """``photo_stored_rows``: how many runs' maps over the astronaut are stored."""
    return {"photo_stored_rows": len(stored_photo_maps(root))}


def photo_attention_figure(rows: Sequence[tuple[str, Mapping[str, np.ndarray]]] | None = None):
    """Draw :func:`photo_maps` rows, one per model, labelled: the face with the top class and
    its probability, then the spatial, channel and fused maps over it (default
    :func:`photo_rows`). Returns the figure, or None when there is no row (no face found)."""
    import matplotlib.pyplot as plt

    if rows is None:
        rows = photo_rows()
    if not rows:
        return None
    fig, axes = plt.subplots(len(rows), 4, figsize=(9, 3.2 * len(rows)), squeeze=False)
    for (label, maps), row in zip(rows, axes, strict=True):
        face = np.asarray(maps["face"], dtype=float)
        prob, names = np.asarray(maps["probs"]), [str(n) for n in maps["class_names"]]
        row[0].imshow(face, cmap="gray", vmin=0, vmax=1)
        row[0].set_title(f"{label}\n{names[int(prob.argmax())]} ({float(prob.max()):.2f})",
                         fontsize=8)
        for ax, name in zip(row[1:], PHOTO_MAPS, strict=True):
            ax.imshow(face, cmap="gray", vmin=0, vmax=1)
            if name not in maps:
                ax.set_title(f"no {name} branch", fontsize=8)
                continue
            shown, style = _map_style(name, _upsample(np.asarray(maps[name]), face.shape),
                                      ATTENTION_V2)
            ax.imshow(shown, alpha=0.5, **style)
            ax.set_title(name, fontsize=8)
            _add_colour_bar(ax, style, _colour_bar_label(name, ATTENTION_V2), 0.5)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig
