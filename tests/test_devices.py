"""`doctor`: the one-line reason a GPU is missing, for each simulated machine, and study requirements via the CLI."""

import json
import os
from dataclasses import replace

import pytest

from harness.devices import GpuFacts, _cuda_number, gpu_factors, gpu_reason, nvidia_gpus

WORKING = GpuFacts(backend="tensorflow", backend_version="2.21.0", gpus_visible=1, driver="570.86",
                   driver_cuda="12.8", build_cuda="12.5", build_cudnn="9", cuda_libs=True, visible_devices=None)
NO_GPU = replace(WORKING, gpus_visible=0)

CASES = {
    "gpu visible": (WORKING, None),
    "hidden by env": (replace(NO_GPU, visible_devices="-1"), "CUDA_VISIBLE_DEVICES='-1' hides every GPU"),
    "cpu machine, cpu wheel": (replace(NO_GPU, driver=None, driver_cuda=None, build_cuda=None),
                               "no NVIDIA driver"),
    "cpu machine, cuda wheel": (replace(NO_GPU, driver=None, driver_cuda=None), "built for CUDA 12.5: this machine"),
    "cpu-only wheel on a gpu machine": (replace(NO_GPU, build_cuda=None, build_cudnn=None),
                                        "tensorflow 2.21.0 is a CPU-only build although NVIDIA driver 570.86"),
    "driver too old for the build": (replace(NO_GPU, driver="470.1", driver_cuda="11.4"),
                                     "supports CUDA up to 11.4 but tensorflow 2.21.0 was built for CUDA 12.5"),
    "cuda libraries missing": (replace(NO_GPU, cuda_libs=False), "cuDNN 9 but those libraries cannot be loaded"),
    "all present, still none": (NO_GPU, "TF_CPP_MIN_LOG_LEVEL=0"),
}


@pytest.mark.parametrize("case", CASES)
def test_gpu_reason_is_one_actionable_line(case):
    facts, expected = CASES[case]
    reason = gpu_reason(facts)
    if expected is None:
        assert reason is None
        return
    assert expected in reason and "\n" not in reason


def test_fix_names_the_install_for_the_backend():
    assert "pip install -e '.[gpu]'" in gpu_reason(replace(NO_GPU, build_cuda=None))
    assert "jax[cuda12]" in gpu_reason(replace(NO_GPU, backend="jax", build_cuda=None))
    assert "download.pytorch.org" in gpu_reason(replace(NO_GPU, backend="torch", build_cuda=None))


def test_cuda_versions_parsed_from_each_backends_build_string():
    assert _cuda_number("12.5.1") == "12.5"
    assert _cuda_number("jax-cuda12-plugin 0.7.1") == "12"
    assert _cuda_number(None) is None
    # a driver for CUDA 12.8 runs a build for 12.5 (newer drivers are backward compatible)
    assert gpu_reason(replace(NO_GPU, driver_cuda="12.8", build_cuda="12.5", cuda_libs=False)).startswith("tensorflow")


def test_gpu_factors_depend_on_compute_capability():
    turing = gpu_factors([{"compute_cap": "7.5"}], gpu_visible=True)
    hopper = gpu_factors([{"compute_cap": "9.0"}], gpu_visible=True)
    assert turing["tf32"].startswith("no effect") and hopper["tf32"] == "takes effect"
    assert all("no effect" in v for k, v in gpu_factors([], gpu_visible=False).items() if k.startswith(("tf32", "env")))


def test_doctor_json_on_this_machine(tmp_path, in_process, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    code, out, err = in_process("doctor", "--json")
    assert code == 0, err
    report = json.loads(out)
    tf = report["backends"]["tensorflow"]
    assert report["environment"]["keras_backend"] == "tensorflow"
    assert report["tracking"]["ok"] and report["storage"]["ok"] and report["problems"] == []
    assert (tf["reason_no_gpu"] is None) == (tf["gpus_visible"] > 0)
    if not nvidia_gpus():
        assert "no NVIDIA driver" in tf["reason_no_gpu"]
    assert not (tmp_path / "mlruns").exists()  # doctor looks, it does not create stores


def test_study_requirements_unmet_exit_2(tmp_path, monkeypatch, capsys):
    """In-process through the CLI's `main` (each doctor imports every backend: 10-20 s as a subprocess)."""
    from harness.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KERAS_BACKEND", os.environ.get("KERAS_BACKEND", "tensorflow"))  # doctor sets a default
    (tmp_path / "gpu.yaml").write_text("name: g\ndevice: gpu\n")
    (tmp_path / "torch.yaml").write_text("name: t\nfactors: {backend: [tensorflow, torch]}\n")
    (tmp_path / "ok.yaml").write_text("name: ok\nfactors: {backend: [tensorflow, jax]}\n")
    assert main(["doctor", "--study", "ok.yaml"]) == 0
    out, err = capsys.readouterr()
    assert "study 'ok': requirements met" in out, err
    for spec, expected in (("torch.yaml", "backend 'torch', which is not installed"),
                           ("gpu.yaml", "needs a GPU (device: gpu)")):
        if spec == "gpu.yaml" and nvidia_gpus():
            continue
        assert main(["doctor", "--study", spec]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and expected in err and err.count("\n") == 1, err
    assert main(["doctor", "--tracking-uri", "http://127.0.0.1:9"]) == 2
    assert "127.0.0.1:9" in capsys.readouterr().err


def test_run_refuses_a_gpu_study_without_gpu(tmp_path, in_process):
    if nvidia_gpus():
        pytest.skip("this machine has a GPU")
    (tmp_path / "gpu.yaml").write_text("name: g\ndata: {n: 100}\ndevice: gpu\n")
    code, _, err = in_process("run", "gpu.yaml", "--no-progress")
    assert code == 2 and err.count("\n") == 1 and "needs a GPU" in err, err
    assert not (tmp_path / "mlruns").exists()  # refused before the store is opened


def test_doctor_refuses_a_run_storage_in_a_missing_folder_as_run_does(tmp_path, monkeypatch):
    """`run` refuses `--storage sqlite:////missing/q.db` (a typo must not start a study elsewhere); doctor said the
    file "will be created". The default store folder (./mlruns) is still made when missing."""
    from harness.commands.doctor import store_check

    monkeypatch.chdir(tmp_path)
    missing = store_check("storage", f"sqlite:///{tmp_path / 'nonexistent' / 'q.db'}")
    assert not missing["ok"] and "no folder" in missing["detail"] and "nonexistent" in missing["detail"]
    assert store_check("storage", f"sqlite:///{tmp_path / 'q.db'}") | {"url": None} == {
        "url": None, "ok": True, "detail": "will be created"}
    assert store_check("storage", None)["ok"]  # ./mlruns/optuna.db: its folder is made
    assert not (tmp_path / "nonexistent").exists() and not (tmp_path / "mlruns").exists()
