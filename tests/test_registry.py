"""Registries: lookup, listing, overrides, unknown names with did-you-mean."""
import subprocess
import sys

import pytest

from joinbench.errors import JoinbenchError, UnknownNameError
from joinbench.registry import (
    REGISTRIES, Registry, create_forward_model, list_datasets, list_forward_models,
)


def test_register_create_list():
    reg = Registry("widget")

    @reg.register("round-widget", description="a round one", radius=2)
    def make(radius=1, colour="red"):
        return {"radius": radius, "colour": colour}

    reg.register("square-widget", make, description="same factory, other defaults", radius=5)
    assert reg.list() == ["round-widget", "square-widget"]
    assert reg.list("round*") == ["round-widget"]
    assert reg.create("round-widget") == {"radius": 2, "colour": "red"}
    assert reg.create("square-widget", colour="blue") == {"radius": 5, "colour": "blue"}
    assert ("round-widget", "a round one") in reg.describe()


def test_prefix_entries_receive_argument():
    reg = Registry("source")
    reg.register("folder", lambda path, n=1: (path, n), prefix=True, description="a folder")
    assert reg.create("folder:/tmp/x", n=3) == ("/tmp/x", 3)
    assert "folder:/a" in reg and "folder" not in reg
    assert reg.describe() == [("folder:PATH", "a folder")]


def test_unknown_name_suggests_close_matches():
    reg = Registry("method")
    reg.register("color-retinex", lambda: 1, description="")
    reg.register("retinex", lambda: 2, description="")
    with pytest.raises(UnknownNameError) as err:
        reg.create("colour-retinex")
    msg = str(err.value)
    assert "Unknown method 'colour-retinex'" in msg and "Did you mean 'color-retinex'" in msg
    assert "\n" not in msg
    assert isinstance(err.value, JoinbenchError)


def test_duplicate_registration_is_refused():
    reg = Registry("thing")
    reg.register("a", lambda: 1)
    with pytest.raises(ValueError):
        reg.register("a", lambda: 2)


def test_builtin_registries_are_populated():
    assert set(REGISTRIES) == {"methods", "datasets", "metrics", "forward-models"}
    assert {"reinhard", "srgb", "reinhard-nospecular"} <= set(list_forward_models())
    assert {"materials", "materials-shift", "faces", "faces-shift", "real-materials", "real-faces"} <= set(list_datasets())
    assert create_forward_model("reinhard", scale=2.0).scale == 2.0


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "joinbench", *args], capture_output=True, text=True)


def test_cli_list_and_unknown_kind():
    out = _cli("list", "forward-models")
    assert out.returncode == 0 and "reinhard" in out.stdout and "srgb" in out.stdout
    out = _cli("list", "dataset")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "Did you mean 'datasets'" in out.stderr


def test_cli_unknown_dataset_is_one_line():
    out = _cli("datasets", "preview", "materails", "--n", "1")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert "Did you mean 'materials'" in out.stderr and "Traceback" not in out.stderr


def test_unknown_prefix_with_long_path_still_suggests():
    reg = Registry("dataset")
    reg.register("folder", lambda path: path, prefix=True)
    with pytest.raises(UnknownNameError, match="Did you mean 'folder:PATH'"):
        reg.create("fodler:/home/user/photos/with/a/long/path")


def test_cli_datasets_preview_info_export(tmp_path):
    out = _cli("datasets", "preview", "faces", "--n", "2", "--resolution", "16", "--out", str(tmp_path / "p.png"))
    assert out.returncode == 0, out.stderr
    from PIL import Image

    w, h = Image.open(tmp_path / "p.png").size
    assert w > 4 * 64 and h > 2 * 64  # image | albedo | shading | specular | mask, two rows
    out = _cli("datasets", "info", "materials-shift")
    assert out.returncode == 0 and "has_ground_truth: True" in out.stdout and "materials-shift" in out.stdout
    out = _cli("datasets", "export", "materials", "--out", str(tmp_path / "e"), "--limit", "2", "--resolution", "16")
    assert out.returncode == 0 and "exported 2 samples" in out.stdout
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == [
        "albedo", "dataset.json", "linear", "materials-00000.png", "materials-00001.png", "shading", "specular"]
    out = _cli("datasets", "export", "materials", "--out", str(tmp_path / "e2"), "--limit", "0")
    assert out.returncode == 2 and "--limit must be at least 1" in out.stderr


def test_a_missing_builtin_module_is_a_broken_install_not_an_empty_registry(monkeypatch):
    """A stale editable install cannot import joinbench.datasets; say so instead of listing
    no datasets."""
    import importlib

    from joinbench import registry
    from joinbench.errors import JoinbenchError

    real = importlib.import_module

    def fake(name, *a, **kw):
        if name == "joinbench.datasets":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real(name, *a, **kw)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(JoinbenchError, match=r"joinbench.datasets cannot be imported.*reinstall"):
        registry._load_builtin_entries()


def test_list_methods_shows_each_declared_kind():
    from typer.testing import CliRunner

    from joinbench.cli import app

    out = CliRunner().invoke(app, ["list", "methods"]).output
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "[feed-forward]" in lines["unet"] and "[optimisation]" in lines["join"]
    assert "[classical]" in lines["retinex"] and "[adapter]" in lines["predictions:PATH"]
