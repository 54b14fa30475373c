"""`joinbench datasets export`: a test split as files other tools can read.

Layout (the same one ``folder:PATH`` reads back, and ``predictions:PATH/linear`` scores)::

    DIR/<id>.png                    display image (8-bit sRGB-like display values)
    DIR/albedo/<id>.png             encoded components (8-bit), shading/, specular/ likewise
    DIR/mask/<id>.png               mask where the dataset has one
    DIR/linear/<id>.npz             lossless float32 linear image/albedo/shading/specular/mask
    DIR/dataset.json                dataset description, forward model, encodings, seed

``folder:DIR`` reads the 8-bit PNGs back, so its ground truth carries 8-bit quantisation
(up to a few percent in linear shading); score against exact ground truth by using the
dataset by name (``--dataset materials``) and your outputs with ``predictions:``.
"""
from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from .env import make_folder, write_json
from .forward import COMPONENTS
from .imageio import write_npz, write_png


def export_dataset(dataset, out: str | Path, limit: int | None = None, progress: bool = True) -> Path:
    out = make_folder(out)
    fm = dataset.forward_model
    n = len(dataset) if limit is None else min(limit, len(dataset))
    for i in tqdm(range(n), desc=f"export {dataset.name}", unit="img", disable=not progress):
        s = dataset[i]
        write_png(out / f"{s.id}.png", s.image)
        arrays = {"image": s.image}
        for c in COMPONENTS:
            lin = s.component(c)
            if lin is None:
                continue
            write_png(out / c / f"{s.id}.png", fm.encode(c, lin))
            arrays[c] = lin
        if s.mask is not None:
            write_png(out / "mask" / f"{s.id}.png", s.mask.float())
            arrays["mask"] = s.mask.float()
        write_npz(out / "linear" / f"{s.id}.npz", **{k: v.float() for k, v in arrays.items()})
    write_json(out / "dataset.json", {
        **dataset.info(), "exported_images": n,
        "forward_model_description": fm.describe(),
        "files": {
            "<id>.png": "display image, 8-bit",
            "albedo|shading|specular/<id>.png": "encoded display-space components, 8-bit (albedo sRGB, shading/specular Reinhard)",
            "mask/<id>.png": "evaluation mask (255 = evaluate)",
            "linear/<id>.npz": "lossless float32 arrays (3,H,W): image (display), albedo/shading/specular (linear), mask (1,H,W)",
        },
    })
    return out
