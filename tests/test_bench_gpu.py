"""bench.gpu end to end on CPU in its --dry-run mode (tiny sizes), so the GPU benchmark cannot rot before a GPU
is lent; and its carried-wheel loading on a wheel made here."""

from __future__ import annotations

import importlib.util
import re
import sys
import zipfile

import pytest

import bench.gpu as gpu


@pytest.fixture
def offline(monkeypatch):
    """The environment bench.gpu sets, set here so that it is restored after the test."""
    for key, value in gpu.OFFLINE.items():
        monkeypatch.setenv(key, value)


@pytest.mark.timeout(120)
def test_dry_run_reports_every_part(offline, capsys, tmp_path):
    figures = gpu.main(["--dry-run", "--workdir", str(tmp_path / "work"), "--wheels", str(tmp_path / "none")])
    lines = capsys.readouterr().out.strip().splitlines()

    assert lines[-1].startswith("gpu: device=cpu ")
    reported = dict(item.split("=", 1) for item in lines[-1].removeprefix("gpu: ").split())
    assert reported == {k: str(v) for k, v in figures.items()}
    skips = {m[1]: m[2] for line in lines if (m := re.fullmatch(r"skip (\w+): (.+)", line))}
    assert set(skips) == set(figures["skipped"].split(",")) - {"none"}
    assert not any(line.startswith("failed ") for line in lines)
    expected = {
        "siglip": ["siglip_crops_per_s"],
        "yolo": ["yolov8n_images_per_s", "yolov8s_images_per_s"],
        "fused": ["fused_images_per_s", "fused_crops_per_s", "fused_device_decode_images_per_s"],
        "faiss": ["faiss_queries_per_s"],  # its train and add seconds may round to 0.0 at the tiny size
    }
    needs = {"yolo": "ultralytics", "fused": "ultralytics", "faiss": "faiss"}
    for part, keys in expected.items():
        if part in skips:  # only a part whose package is missing here may skip, and it says why
            assert importlib.util.find_spec(needs.get(part, "torch")) is None, skips[part]
            assert len(skips[part]) > 10
        else:
            assert all(figures[k] > 0 for k in keys), figures
    if "fused" in skips:
        return
    assert 1 <= figures["fused_crops_per_image"] <= 4  # detector.max_crops; min_score 0 keeps up to that many
    fused_runs = [m.groups() for line in lines if (m := re.match(r"\s*2\s+([12])\s+thread\s+(\d+)\s+(\d+)\s", line))]
    assert [calls for calls, _, _ in fused_runs] == ["1", "2"]  # --fused-calls 1 2 by default
    assert len({(images, crops) for _, images, crops in fused_runs}) == 1  # two copies on two threads: every row once


def test_missing_module_loads_from_a_carried_wheel(monkeypatch, tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "carried_probe-1.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr("carried_probe/__init__.py", "VALUE = 7\n")
        wheel.writestr("carried_probe/data.txt", "package data\n")
        wheel.writestr("carried_probe-1.0.dist-info/METADATA", "Name: carried-probe\n")
    with zipfile.ZipFile(wheels / "installed-1.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr("pytest/__init__.py", "")  # importable already: left alone
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "carried_probe", raising=False)

    assert gpu.wheel_modules(wheels / "carried_probe-1.0-py3-none-any.whl") == {"carried_probe"}
    assert gpu.unpack_wheels(wheels, tmp_path / "unpacked") == ["carried_probe-1.0-py3-none-any.whl"]
    import carried_probe

    assert carried_probe.VALUE == 7
    assert (tmp_path / "unpacked" / "carried_probe-1.0-py3-none-any" / "carried_probe" / "data.txt").exists()
    assert gpu.unpack_wheels(tmp_path / "absent", tmp_path / "unpacked") == []
    monkeypatch.delitem(sys.modules, "carried_probe")
