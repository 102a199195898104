"""All of perception_core/engines/tensorrt_engine.py, run in CI against a fake ``tensorrt`` and a fake libcudart.

TensorRT cannot be installed on the development machines, so its glue runs here against
test/fakes/tensorrt (the TensorRT 8.6 / 10.x / 11.x Python API, names present only in the versions that
have them) and test/fakes/libcudart.py (the CUDA runtime C functions, with their cuda_runtime_api.h
signatures checked at every call). The fake engine executes by running ONNX Runtime on the ONNX bytes
carried in the fake plan, reading and writing the bound buffers with real byte copies, so outputs are
compared with ONNX Runtime for real.

What stays unexecuted here (runs only on a Jetson/GPU, in test_engine_conformance.py): real TensorRT
ONNX parsing, layer fusion, tactic selection and plan serialization; real GPU kernels and FP16/INT8
numerics (the fake computes in FP32); real CUDA allocations, copies, streams and drivers.
Both fakes are loaded from their files inside fixtures and registered only for the test using them.
"""

from __future__ import annotations

import importlib.util
import io
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from model_fixtures import make_geometry_model
from perception_core.engines import load_engine
from perception_core.engines import tensorrt_engine as te
from perception_core.engines.onnxruntime_engine import OnnxRuntimeEngine
from perception_core.model_spec import ModelSpec
from perception_core.pipeline import stages
from perception_core.sim import VALIDATION_SEED, render_scene

ROOT = Path(__file__).resolve().parents[1]
FAKES = Path(__file__).parent / "fakes"
MODELS = ROOT / "models"
VERSIONS = ["8.6.2", "10.3.0", "10.13.3", "11.1.0"]  # JetPack 6.0, 6.1/6.2, 7.0, a current pip wheel
# The bundled model's heatmap decoding as the ONNX parser names its layers: the heatmap conv, Sigmoid, the
# slices/transposes around the 3x3 MaxPool, Equal, the mask multiply and the TopK over the flattened scores.
P = "multitask_inference_1/"  # the exported inference model's scope
PEAK_FINDER = {P + name for name in (
    "det_heatmap_1/BiasAdd", "det_heatmap_1/Sigmoid", "peaks_1/strided_slice", "peaks_1/strided_slice__334",
    "det_heatmap_1/BiasAdd__330", "peaks_1/strided_slice_3", "peaks_1/MaxPool2d__341", "peaks_1/MaxPool2d",
    "peaks_1/strided_slice_4", "peaks_1/strided_slice_4__346", "peaks_1/MaxPool2d__342", "peaks_1/Equal",
    "peaks_1/mul", "peaks_1/Reshape", "peaks_1/TopKV2")} | {"Unsqueeze__337"}  # Cast (bool -> float): own type


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def make_gpu(monkeypatch):
    """Make a fake GPU and route tensorrt_engine's libcudart to it (the only CUDA entry point there)."""
    cudart = _load("fake_libcudart", FAKES / "libcudart.py")

    def make(**kwargs):
        device = cudart.FakeCudaDevice(**kwargs)
        monkeypatch.setattr(te, "_open_libcudart", lambda: device.lib)
        monkeypatch.setattr(te, "_RUNTIME", None)
        return device

    return make


@pytest.fixture
def gpu(make_gpu):
    return make_gpu()  # an Orin: integrated, can map host memory


@pytest.fixture
def install(monkeypatch, tmp_path):
    """Install the fake ``tensorrt`` of a given version for this test only; plans go to tmp_path."""
    monkeypatch.setattr(te, "DEFAULT_CACHE_DIR", tmp_path / "engines")

    def install_version(version: str, device):
        monkeypatch.setenv("FAKE_TENSORRT_VERSION", version)
        trt = _load("tensorrt", FAKES / "tensorrt" / "__init__.py")
        trt._fake_device = device
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        return trt

    return install_version


@pytest.fixture
def trt(install, gpu):
    return install("10.3.0", gpu)


@pytest.fixture(scope="module")
def geometry(tmp_path_factory):
    return ModelSpec.load(make_geometry_model(tmp_path_factory.mktemp("geometry")))


def geometry_batch(spec):
    batch = np.zeros(spec.input_shape, np.uint8)
    batch[0, 20:60, 30:90, 2] = 200
    return {spec.input_name: batch}


def assert_same(got, want):
    assert set(got) == set(want)
    for name in want:
        assert got[name].dtype == want[name].dtype and np.array_equal(got[name], want[name]), name


# ------------------------------------------------------------------------------------------ versions


@pytest.mark.parametrize("version", VERSIONS)
def test_builds_and_runs_like_onnxruntime_on_each_tensorrt_version(install, gpu, geometry, version, capsys):
    trt = install(version, gpu)
    engine = load_engine(geometry, engine="tensorrt")
    feeds = geometry_batch(geometry)
    assert_same(engine.infer(feeds), OnnxRuntimeEngine(geometry.model_path).infer(feeds))
    engine.warmup(1)
    network, config = trt._state["networks"][-1], trt._state["configs"][-1]
    flags = {f.name for f in config._flags}
    if version.startswith("8."):
        assert network._flags == 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        assert not hasattr(trt, "IProgressMonitor") and flags == {"FP16"}
    else:
        assert network._flags == 0 and config.progress_monitor is not None
    if version.startswith("11."):
        assert engine.precision == "fp32" and flags == set() and network._strongly_typed
        assert "ModelOpt AutoCast" in capsys.readouterr().err
    else:
        assert engine.precision == "fp16" and "FP16" in flags
    assert engine.name == "tensorrt:Orin" and engine.input_spec == {"image": (geometry.input_shape, "uint8")}


def test_implicit_batch_network_is_what_tensorrt_8_rejects(install, gpu, geometry):
    """Why 8.6 needs the flag: the (fake) 8.x parser refuses create_network(0), as the real one does."""
    trt = install("8.6.2", gpu)
    logger = trt.Logger()
    parser = trt.OnnxParser(trt.Builder(logger).create_network(0), logger)
    assert not parser.parse(geometry.model_path.read_bytes())
    assert "EXPLICIT_BATCH" in str(parser.get_error(0))


def test_tensorrt_older_than_8_6_is_refused_with_one_line(install, gpu, geometry):
    install("8.5.3", gpu)
    with pytest.raises(ValueError, match=r"TensorRT 8\.5\.3 is too old.*8\.6") as err:
        load_engine(geometry, engine="tensorrt")
    assert "\n" not in str(err.value)


def test_names_removed_in_tensorrt_11_are_absent_from_its_fake(install, gpu):
    """The glue must not touch them there; the fake proves it by not having them."""
    trt = install("11.1.0", gpu)
    assert not {"FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS"} & set(trt.BuilderFlag.__members__)
    assert "EXPLICIT_BATCH" not in trt.NetworkDefinitionCreationFlag.__members__
    assert not hasattr(trt.ILayer, "precision") and not hasattr(trt.ILayer, "set_output_type")
    old = install("10.13.3", gpu)
    assert {"FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS"} <= set(old.BuilderFlag.__members__)


# -------------------------------------------------------------------------------------------- dtypes


def dtype_model(folder: Path, with_int64: bool) -> Path:
    """uint8 image in; float32, float16, int32, bool, uint8 (and int64) outputs computed from it."""
    nodes = [helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Constant", [], ["k"], value=helper.make_tensor("k", TensorProto.FLOAT, [], [0.5])),
             helper.make_node("Mul", ["f", "k"], ["f32"]),
             helper.make_node("Cast", ["f32"], ["f16"], to=TensorProto.FLOAT16),
             helper.make_node("Cast", ["f32"], ["i32"], to=TensorProto.INT32),
             helper.make_node("Greater", ["f32", "k"], ["b"]),
             helper.make_node("Cast", ["f32"], ["u8"], to=TensorProto.UINT8)]
    outputs = [("f32", TensorProto.FLOAT), ("f16", TensorProto.FLOAT16), ("i32", TensorProto.INT32),
               ("b", TensorProto.BOOL), ("u8", TensorProto.UINT8)]
    if with_int64:
        nodes.append(helper.make_node("Cast", ["f32"], ["i64"], to=TensorProto.INT64))
        outputs.append(("i64", TensorProto.INT64))
    image = helper.make_tensor_value_info("image", TensorProto.UINT8, [1, 4, 6, 3])
    graph = helper.make_graph(nodes, "dtypes", [image],
                              [helper.make_tensor_value_info(n, t, [1, 4, 6, 3]) for n, t in outputs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "dtypes.onnx"
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("version", ["8.6.2", "10.3.0"])
def test_every_io_dtype_maps_to_its_numpy_type(install, gpu, tmp_path, version):
    install(version, gpu)
    path = dtype_model(tmp_path, with_int64=version.startswith("10."))
    engine = te.TensorRTEngine.from_onnx(path, "fp32")
    feeds = {"image": np.arange(72, dtype=np.uint8).reshape(1, 4, 6, 3)}
    assert_same(engine.infer(feeds), OnnxRuntimeEngine(path).infer(feeds))


# ------------------------------------------------------------------------------- the bundled models


def scene_batches(spec, count=2):
    return [{spec.input_name: stages.preprocess(render_scene(VALIDATION_SEED, i).frame.image, spec.input_hw)[0]}
            for i in range(count)]


def test_bundled_model_runs_like_onnxruntime_with_the_peak_finder_pinned(trt, capsys):
    spec = ModelSpec.load(MODELS / "multitask.onnx")
    engine = load_engine(spec, engine="tensorrt")
    reference = OnnxRuntimeEngine(spec.model_path)
    for feeds in scene_batches(spec):
        assert_same(engine.infer(feeds), reference.infer(feeds))
    network, config = trt._state["networks"][-1], trt._state["configs"][-1]
    pinned = {layer.name for layer in network._layers if layer._precision is not None or layer._output_types}
    assert pinned == PEAK_FINDER  # the heatmap decoding, not the backbone, not the segmentation ArgMax
    by_name = {layer.name: layer for layer in network._layers}
    equal, max_pool = by_name[P + "peaks_1/Equal"], by_name[P + "peaks_1/MaxPool2d"]
    assert equal._precision == trt.float32 and not equal._output_types  # bool output
    assert max_pool._output_types == {0: trt.float32}
    assert config.get_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    assert "pinned 16 peak-finder layers to float32" in capsys.readouterr().err


def test_nothing_is_pinned_without_fp16_or_a_peak_finder(install, gpu, geometry, capsys):
    trt = install("10.3.0", gpu)
    te.cached_plan(MODELS / "multitask.onnx", te.BuildSettings("fp32"))
    te.cached_plan(geometry.model_path, te.BuildSettings("fp16"))
    for network, config in zip(trt._state["networks"], trt._state["configs"]):
        assert not any(layer._precision is not None or layer._output_types for layer in network._layers)
        assert not config.get_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    assert "no Sigmoid -> MaxPool -> Equal peak finder found" in capsys.readouterr().err
    trt11 = install("11.1.0", gpu)  # strongly typed: no layer precisions at all, and no error
    te.cached_plan(MODELS / "multitask.onnx", te.BuildSettings("fp16"))
    assert trt11._state["builders"] == 1


def test_cpu_int8_model_is_refused_naming_the_tensorrt_form(trt, capsys):
    cpu = ModelSpec.load(MODELS / "multitask_int8.onnx")
    with pytest.raises(ValueError, match=r"multitask_int8\.onnx is not the TensorRT INT8 form.*"
                                         r"use .*multitask_int8_trt\.onnx"):
        load_engine(cpu, engine="tensorrt")
    assert te.main(["--model", str(cpu.model_path), "--precision", "int8"]) == 1
    assert "multitask_int8_trt.onnx" in capsys.readouterr().err
    assert trt._state["builders"] == 0 and trt._state["parsed"] == 0  # refused before TensorRT saw it
    # ...where TensorRT itself would only have failed at parse:
    logger = trt.Logger()
    parser = trt.OnnxParser(trt.Builder(logger).create_network(0), logger)
    assert not parser.parse(cpu.model_path.read_bytes())
    assert any("symmetric" in str(parser.get_error(i)) for i in range(parser.num_errors))


@pytest.mark.parametrize("version", ["10.3.0", "11.1.0"])
def test_tensorrt_int8_form_builds_and_runs(install, gpu, version):
    trt = install(version, gpu)
    spec = ModelSpec.load(MODELS / "multitask_int8_trt.onnx")
    engine = load_engine(spec, engine="tensorrt")
    assert engine.precision == "int8"
    (feeds,) = scene_batches(spec, 1)
    assert_same(engine.infer(feeds), OnnxRuntimeEngine(spec.model_path).infer(feeds))
    flags = {f.name for f in trt._state["configs"][-1]._flags}
    assert flags == ({"FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS"} if version < "11" else set())


# --------------------------------------------------------------------------------------------- cache


def test_plan_key_needs_no_tensorrt_and_changes_with_every_part(tmp_path, geometry):
    orin = te.DeviceInfo("Orin", (8, 7), 16, integrated=True, can_map_host_memory=True)
    settings = te.BuildSettings()

    def path(**change):
        parts = {"onnx_path": geometry.model_path, "settings": settings, "trt_version": "10.3.0", "device": orin,
                 **change}
        return te.plan_cache_path(cache_dir=tmp_path, **parts)

    other_onnx = tmp_path / "other.onnx"
    other_onnx.write_bytes(geometry.model_path.read_bytes() + b"\0")
    variants = [path(), path(trt_version="10.3.0.26"), path(device=te.DeviceInfo("Orin", (8, 7), 8)),
                path(device=te.DeviceInfo("Orin", (8, 6), 16)), path(device=te.DeviceInfo("Thor", (8, 7), 16)),
                path(settings=te.BuildSettings("int8")), path(settings=te.BuildSettings(workspace_mib=512)),
                path(settings=te.BuildSettings(pin_peak_finder=False)), path(onnx_path=other_onnx)]
    assert len(set(variants)) == len(variants) and path() == variants[0]
    assert "tensorrt" not in sys.modules  # neither imported nor faked: the parts were all given
    te.BUILD_RECIPE_VERSION += 1
    try:
        assert path() != variants[0]
    finally:
        te.BUILD_RECIPE_VERSION -= 1


def test_cache_hit_miss_timing_cache_and_stale_plans(install, gpu, geometry, tmp_path):
    trt = install("10.3.0", gpu)
    first = te.cached_plan(geometry.model_path)
    assert te.cached_plan(geometry.model_path) == first and trt._state["builders"] == 1  # hit
    timing = te.timing_cache_path(first)
    assert timing.is_file() and first.with_suffix(".json").is_file()
    second = te.cached_plan(geometry.model_path, te.BuildSettings(workspace_mib=256))  # a setting changed: miss
    assert second != first and trt._state["builders"] == 2
    assert trt._state["configs"][-1]._timing_hits > 0  # the timing cache from the first build was loaded
    assert trt._state["configs"][-1].get_memory_pool_limit(trt.MemoryPoolType.WORKSPACE) == 256 << 20
    timing.write_bytes(b"written by another TensorRT")  # unreadable: the build starts an empty one
    te.cached_plan(geometry.model_path, te.BuildSettings(workspace_mib=128))
    assert timing.read_bytes().startswith(b"FAKETIMING")
    newer = install("10.13.3", gpu)  # another TensorRT: another plan
    assert te.cached_plan(geometry.model_path) != first and newer._state["builders"] == 1
    with pytest.raises(te.TensorRTError, match="not a TensorRT 10.13.3 plan for Orin: delete it"):
        te.TensorRTEngine(first)  # a 10.3 plan
    assert not list(first.parent.glob("*.tmp"))


def test_concurrent_builds_build_once_and_never_leave_partial_files(trt, geometry):
    paths, errors = [], []

    def build():
        try:
            paths.append(te.cached_plan(geometry.model_path))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(paths)) == 1 and trt._state["builders"] == 1
    te.TensorRTEngine(paths[0])  # a whole plan
    target = paths[0].with_name("race.bin")
    payloads = [bytes([i]) * (4 << 20) for i in range(8)]

    def write(payload):
        try:
            te._atomic_write(target, payload)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    writers = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    assert not errors and target.read_bytes() in payloads and not list(target.parent.glob("*.tmp"))


# ---------------------------------------------------------------------------------- progress monitor


def test_progress_monitor_prints_phases_not_steps_and_never_raises(trt, geometry):
    log = io.StringIO()
    assert te.build_plan(geometry.model_path, log=log)
    lines = [line for line in log.getvalue().splitlines() if "Building engine" in line or "Optimizing" in line]
    assert len(lines) == 4, log.getvalue()  # two phases, start and finish; no per-layer phase, no steps
    assert "Timing" not in log.getvalue()

    class Broken(io.StringIO):
        def write(self, text):
            if "Optimizing" in text:
                raise OSError("stderr closed")
            return super().write(text)

    assert te.build_plan(geometry.model_path, log=Broken())  # the monitor swallowed it; the build went on
    monitor = te._ProgressMonitor(trt)(Broken())
    monitor.phase_start("Optimizing network", None, 3)
    assert monitor.step_complete("Optimizing network", 0) is True


def test_an_exception_in_a_monitor_cancels_the_build_which_is_why_ours_never_raises(trt, geometry):
    class Raising(trt.IProgressMonitor):
        def phase_start(self, *args):
            pass

        def step_complete(self, *args):
            raise RuntimeError("boom")

        def phase_finish(self, *args):
            pass

    logger = trt.Logger()
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    assert trt.OnnxParser(network, logger).parse(geometry.model_path.read_bytes())
    config = builder.create_builder_config()
    config.progress_monitor = Raising()
    assert builder.build_serialized_network(network, config) is None


# ----------------------------------------------------------------------------------- CUDA and memory


def test_integrated_gpu_uses_mapped_pinned_memory_and_no_copies(trt, gpu, geometry):
    engine = load_engine(geometry, engine="tensorrt")
    feeds = geometry_batch(geometry)
    assert_same(engine.infer(feeds), OnnxRuntimeEngine(geometry.model_path).infer(feeds))
    assert engine.zero_copy and gpu.calls["cudaMemcpyAsync"] == 0 and gpu.calls["cudaMalloc"] == 0
    assert {kind for _, kind in gpu.memory.values()} == {"mapped"}
    engine.close()
    assert gpu.live_allocations() == 0 and not gpu.streams


def test_discrete_gpu_uses_pinned_staging_and_async_copies(make_gpu, install, geometry):
    gpu = make_gpu(name="NVIDIA RTX A2000", compute_capability=(8, 6), sm_count=26, integrated=False,
                   legacy_properties_only=True)
    install("10.3.0", gpu)
    engine = load_engine(geometry, engine="tensorrt")
    feeds = geometry_batch(geometry)
    for _ in range(2):
        assert_same(engine.infer(feeds), OnnxRuntimeEngine(geometry.model_path).infer(feeds))
    assert not engine.zero_copy and engine.name == "tensorrt:NVIDIA RTX A2000"
    assert gpu.calls["cudaMemcpyAsync"] == 2 * 5 and gpu.staged_copies == 0  # 1 input + 4 outputs, all pinned
    with pytest.raises(ValueError, match="shape"):
        engine.infer({"image": feeds["image"][0]})
    engine.close()
    assert gpu.live_allocations() == 0


def test_cuda_newer_than_the_driver_fails_at_start_with_one_line(make_gpu, install, geometry):
    gpu = make_gpu(runtime_version=13000, driver_version=12060)  # a CUDA 13 libcudart on JetPack 6
    install("10.3.0", gpu)
    with pytest.raises(ValueError, match="cudaErrorInsufficientDriver.*use the libcudart that came with JetPack"):
        load_engine(geometry, engine="tensorrt")


def test_without_tensorrt_or_libcudart_the_errors_say_what_is_missing(monkeypatch, geometry, tmp_path, capsys):
    if importlib.util.find_spec("tensorrt") is None:
        with pytest.raises(ValueError, match="engine 'tensorrt' is not available here"):
            load_engine(geometry, engine="tensorrt")
        assert te.main(["--model", str(geometry.model_path), "--cache-dir", str(tmp_path)]) == 2
        assert "needs TensorRT" in capsys.readouterr().err
    monkeypatch.setenv("CUDART_LIBRARY", str(tmp_path / "libcudart.so"))
    monkeypatch.setattr(te.ctypes.util, "find_library", lambda name: None)
    monkeypatch.setattr(te, "_RUNTIME", None)
    if not any(Path(p, "libcudart.so").exists() for p in ("/usr/local/cuda/lib64", "/usr/lib")):
        with pytest.raises(ImportError, match="CUDART_LIBRARY"):
            te.cuda_runtime()


def test_build_engine_command_prints_the_plan(trt, geometry, tmp_path, capsys):
    assert te.main(["--model", str(geometry.model_path), "--workspace-mib", "64", "--cache-dir", str(tmp_path)]) == 0
    plan = Path(capsys.readouterr().out.strip())
    assert plan.parent == tmp_path and plan.is_file()
