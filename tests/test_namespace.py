"""`datasets/` and `baselines/` must install as joinbench.datasets / joinbench.baselines
only: the top-level names belong to Hugging Face `datasets` and OpenAI `baselines`."""
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_subpackages_resolve_to_our_folders():
    import joinbench.baselines
    import joinbench.datasets

    assert pathlib.Path(joinbench.datasets.__file__).resolve().parent == REPO / "datasets"
    assert pathlib.Path(joinbench.baselines.__file__).resolve().parent == REPO / "baselines"


def test_top_level_names_are_not_ours(tmp_path):
    # Run from an unrelated directory, as a user would: the repository is not on sys.path.
    code = (
        "import importlib.util, json\n"
        "out = {}\n"
        "for name in ('datasets', 'baselines'):\n"
        "    spec = importlib.util.find_spec(name)\n"
        "    out[name] = None if spec is None else spec.origin\n"
        "print(json.dumps(out))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    import json

    found = json.loads(res.stdout)
    for name, origin in found.items():
        assert origin is None or not pathlib.Path(origin).resolve().is_relative_to(REPO), (name, origin)


def test_regular_install_maps_namespaces(tmp_path):
    """Build a wheel-style install into a target dir and import from it (no editable hook)."""
    import shutil

    src = tmp_path / "src"  # build from a copy: setuptools writes build/ next to the sources
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "runs", ".git")
    for name in ("joinbench", "datasets", "baselines"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, src / name)
    target = tmp_path / "site"
    res = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-compile",
         "--target", str(target), "-q", str(src)],
        capture_output=True, text=True,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert (target / "joinbench" / "datasets" / "__init__.py").exists()
    assert (target / "joinbench" / "baselines" / "__init__.py").exists()
    assert not (target / "datasets").exists() and not (target / "baselines").exists()
    shipped = sorted(p.name for p in (REPO / "joinbench" / "weights").glob("*.safetensors"))
    assert shipped and all((target / "joinbench" / "weights" / name).is_file() for name in shipped)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import joinbench.datasets, joinbench.baselines, joinbench.cli, importlib.util, pkgutil;"
        "from joinbench.registry import list_methods, list_datasets; assert list_methods() and list_datasets();"
        "[__import__(m.name) for m in pkgutil.walk_packages(joinbench.__path__, 'joinbench.') if not m.name.endswith('__main__')];"
        "print(joinbench.datasets.__file__);"
        "print(importlib.util.find_spec('datasets') is None or sys.argv[1] not in importlib.util.find_spec('datasets').origin)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(target)], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    first, second = out.stdout.split()
    assert first.startswith(str(target)) and second == "True"
