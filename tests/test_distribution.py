"""kv.distribution: layouts of every family, data- and model-parallel fit / generate on virtual devices.

Several devices need a fresh process (JAX reads ``XLA_FLAGS`` once, TensorFlow
fixes its logical devices at start-up): those checks run a small script in a
subprocess with the environment set, and compare against the same script's
single-device run. The reference is the same training without any
distribution: same global batch, same seed, same initial weights.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_vdiff as kv
from keras_vdiff import distribution as kd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAMILIES = ["dit_tiny", "latte_tiny", "gentron_tiny", "video_dit_tiny", "cogvideox_tiny", "snapvideo_tiny",
            "vdm_unet_tiny", pytest.param("unet2d_tiny", marks=pytest.mark.slow)]  # the 2D U-Net builds slowly


def fake_mesh(batch=2, model=2):
    return keras.distribution.DeviceMesh((batch, model), ("batch", "model"),
                                         devices=[f"cpu:{i}" for i in range(batch * model)])


def build(preset, **kwargs):
    name = kv.presets.registry.get_preset(preset)["class_name"]
    return keras.saving.get_registered_object(f"keras_vdiff>{name}").from_preset(preset, **kwargs)


@pytest.mark.parametrize("preset", FAMILIES)
def test_layout_map_shards_attention_and_mlp_kernels_of_every_family(preset):
    backbone = build(preset)
    layouts = kd.layout_map(backbone, fake_mesh())
    axes = {v.path: (layouts[v.path].axes if layouts[v.path] is not None else (None,) * len(v.shape))
            for v in backbone.weights}
    layer = lambda path: path.split("/")[-2]  # noqa: E731
    column = [p for p in axes if p.endswith("/kernel") and layer(p) in ("query", "key", "value", "qkv", "fc1")]
    row = [p for p in axes if p.endswith("/kernel") and layer(p) in ("output_projection", "fc2")]
    assert column and row
    for path in column:  # column-parallel: output features over `model` (tiny widths are all even)
        assert axes[path] == (None, "model"), path
    for path in row:
        assert axes[path] == ("model", None), path
    for path, value in axes.items():  # embeddings, norms, biases and everything else: replicated
        if path not in column and path not in row:
            assert value == (None,) * len(value), path


def test_layout_map_fsdp_splits_the_other_large_kernels_over_batch_and_checks_divisibility():
    backbone = build("dit_tiny")
    layouts = kd.layout_map(backbone, fake_mesh(), fsdp=True)
    assert layouts["block_0/attention/query/kernel"].axes == ("batch", "model")
    assert layouts["block_0/mlp/fc2/kernel"].axes == ("model", "batch")
    assert layouts["block_0/modulation/projection/kernel"].axes == (None, "batch")   # (64, 384)
    assert layouts["label_embedding/table/embeddings"] is None                      # lookup tables: replicated
    # An axis that does not divide a dimension leaves it whole.
    assert kd.kernel_axes("block_0/attention/query/kernel", (64, 30), {"batch": 1, "model": 4}) == (None, None)
    with pytest.raises(ValueError, match="axis names"):
        kd.layout_map(backbone, keras.distribution.DeviceMesh((4,), ("data",), devices=["cpu:0"] * 4))


def test_mesh_shape_forms_and_errors(backend):
    assert kd.mesh_sizes("batch=2,model=2") == {"batch": 2, "model": 2}
    assert kd.mesh_sizes((1, 4)) == {"batch": 1, "model": 4}
    assert kd.mesh_sizes({"model": 2}) == {"batch": 1, "model": 2}
    with pytest.raises(ValueError, match="mesh_shape"):
        kd.mesh_sizes("data=2")
    if backend == "tensorflow":
        with pytest.raises(kd.DistributionError, match="mirrored_strategy"):
            kd.data_parallel()


def test_torch_asks_for_one_device_only(backend):
    if backend != "torch":
        pytest.skip("the PyTorch backend's single-device rule")
    for call in (lambda: kd.data_parallel(), lambda: kd.data_parallel(devices=2),
                 lambda: kd.model_parallel({"batch": 1, "model": 2}, backbone=None),
                 lambda: kd.mirrored_strategy(), lambda: kd.check_single_device(2)):
        with pytest.raises(kd.DistributionError, match="one device"):
            call()
    kd.check_single_device(1)  # one device is fine


# --- several devices, in a fresh process -----------------------------------------------------------------
SCRIPT = textwrap.dedent('''
    import json, os, sys
    backend, mode = sys.argv[1], sys.argv[2]
    if backend == "tensorflow":
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    import keras_vdiff as kv
    from keras_vdiff import distribution as kd

    rng = np.random.default_rng(0)
    data = {"videos": rng.integers(0, 255, (8, 2, 8, 8, 1)).astype("uint8"), "labels": np.arange(8) % 4}
    template = kv.models.Latte.from_preset("latte_tiny")
    weights = template.get_weights()

    class Losses(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.values = []
        def on_epoch_end(self, epoch, logs=None):   # one step per epoch: the step's own loss
            self.values.append(float(logs["loss"]))

    def run(scope, fit_steps, generate):
        keras.utils.set_random_seed(0)
        with scope:
            backbone = kv.models.Latte.from_preset("latte_tiny")
            backbone.set_weights(weights)
            model = kv.VideoDiffusion(backbone, seed=1)
            model.compile(optimizer=keras.optimizers.AdamW(1e-3))
            losses = Losses()
            if fit_steps:
                model.fit(kv.data.VideoBatches(data, batch_size=8, shuffle=False), epochs=fit_steps, verbose=0,
                          callbacks=[losses])
            latents = (model.generate(labels=[0, 1, 2, 3], steps=2, seed=0, return_latents=True).tolist()
                       if generate else None)
        return model, getattr(losses, "values", []), latents

    out = {}
    if backend == "tensorflow":
        import contextlib
        _, out["single"], _ = run(contextlib.nullcontext(), 3, False)
        _, out["mirrored"], _ = run(kd.mirrored_strategy(2).scope(), 3, False)
    else:
        steps = 3 if mode == "full" else 0
        _, out["single"], out["single_latents"] = run(kd.no_distribution(), steps, mode == "full")
        data_parallel = kd.data_parallel()
        dp_model, out["data_parallel"], out["data_parallel_latents"] = run(data_parallel.scope(), steps,
                                                                           mode == "full")
        if mode == "full":  # generate's loop (cached by the call above) runs on batch-sharded latents
            with data_parallel.scope():
                plan = dp_model.prepare_generation(labels=[0, 1, 2, 3], seed=0)
                out["latents_sharding"] = list(dp_model.sample_latents(plan, steps=2).sharding.spec)
        model, out["model_parallel"], out["model_parallel_latents"] = run(
            kd.model_parallel("batch=2,model=2", backbone=template).scope(), steps, mode == "full")
        out["shardings"] = {v.path: [list(v.value.sharding.spec), list(v.value.addressable_shards[0].data.shape)]
                            for v in model.backbone.weights
                            if v.path.endswith(("query/kernel", "fc2/kernel", "/embeddings"))}
        out["devices"] = len(keras.distribution.list_devices())
    print("RESULT" + json.dumps(out))
''')


def run_script(tmp_path, backend, mode):
    script = tmp_path / "distributed_run.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
               XLA_FLAGS="--xla_force_host_platform_device_count=4", PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, str(script), backend, mode], env=env, capture_output=True, text=True,
                          timeout=900, cwd=str(tmp_path))
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT"):])


def check_sharded(out):
    """The model-parallel run's kernels really are split over `model` (each device holds half)."""
    assert out["devices"] == 4
    query = out["shardings"]["spatial_block_0/attention/query/kernel"]
    fc2 = out["shardings"]["spatial_block_0/mlp/fc2/kernel"]
    assert query[0] == [None, "model"] and query[1] == [32, 16]      # (32, 32) kernel, column halves
    assert fc2[0] == ["model", None] and fc2[1] == [64, 32]          # (128, 32) kernel, row halves
    embedding = out["shardings"]["condition_embedding/label_embedding/table/embeddings"]
    assert all(axis is None for axis in embedding[0]) and embedding[1] == [5, 32]   # replicated


def test_jax_model_parallel_builds_sharded_kernels_on_four_virtual_devices(backend, tmp_path):
    if backend != "jax":
        pytest.skip("keras.distribution runs on JAX")
    check_sharded(run_script(tmp_path, "jax", "build"))


@pytest.mark.slow
@pytest.mark.parametrize("engine, runs", [("jax", ("data_parallel", "model_parallel")),
                                          ("tensorflow", ("mirrored",))])
def test_distributed_fit_gives_the_single_device_losses_and_generate_its_samples(backend, tmp_path, engine, runs):
    """Same global batch, seed and initial weights: per-step losses within 1e-4 over 3 steps (JAX: also the
    model-parallel run's kernels sharded, and ``generate`` on the mesh equal to one device's)."""
    if backend != engine:
        pytest.skip(f"this distribution runs on {engine}")
    out = run_script(tmp_path, engine, "full")
    assert len(out["single"]) == 3
    for run in runs:
        np.testing.assert_allclose(out[run], out["single"], atol=1e-4, err_msg=run)
        if engine == "jax":
            np.testing.assert_allclose(out[f"{run}_latents"], out["single_latents"], atol=1e-5, err_msg=run)
    if engine == "jax":
        check_sharded(out)
        assert out["latents_sharding"][:1] == ["batch"]  # data parallel: each device samples its rows


TINY_RUN = ["--config", json.dumps(dict(frame_size=8, num_frames=4, backbone=dict(hidden_dim=16, num_layers=2,
                                                                                 num_heads=2),
                                        text_encoder=dict(hidden_dim=16, num_layers=1, num_heads=2))),
            "--num-videos", "16", "--batch-size", "8", "--samples", "0"]


def test_cli_train_distribution_options_are_checked_before_any_work(tmp_path, backend):
    from keras_vdiff import cli

    def error(*options):
        with pytest.raises(SystemExit) as raised:
            cli.main(["train", "--steps", "1", "--output-dir", str(tmp_path / "run"), *TINY_RUN, *options])
        return str(raised.value)

    if backend == "torch":
        assert "--devices" in error("--devices", "2") and "one device" in error("--devices", "2")
    if backend != "jax":
        message = error("--mesh", "batch=1,model=2")
        assert message.startswith("error: --mesh") and "JAX" in message
    else:
        assert "--devices" in error("--devices", "4") and "available" in error("--devices", "4")  # one CPU here
        assert "not divisible" in error("--devices", "3")
        assert "'batch' / 'model'" in error("--mesh", "data=2")
    with pytest.raises(SystemExit):  # argparse: one or the other
        cli.main(["train", "--steps", "1", "--output-dir", str(tmp_path / "run"), "--devices", "2", "--mesh", "model=2"])
    assert not (tmp_path / "run" / "pipeline").exists()


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "jax", reason="keras.distribution meshes run on JAX")
@pytest.mark.parametrize("option", [["--devices", "4"], ["--mesh", "batch=2,model=2"]])
def test_cli_train_runs_data_and_model_parallel_on_four_devices(tmp_path, option):
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT,
               XLA_FLAGS="--xla_force_host_platform_device_count=4")
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "keras_vdiff.cli", "train", "--steps", "2", "--output-dir",
                           str(run), *TINY_RUN, *option], env=env, capture_output=True, text=True, timeout=900,
                          cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Distributing over" in done.stdout
    history = json.load(open(run / "history.json"))
    assert history["steps"] == 2 and all(np.isfinite(history["losses"]))
    assert kv.VideoDiffusion.from_preset(str(run / "pipeline")).backbone.count_params() > 0
