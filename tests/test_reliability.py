"""Nothing lost: the data-loss cases a new user hit (issue #17), each as a regression test, on every backend.

Each test reproduces one mistake (saving over a folder of one's own files,
training into an existing run, a diverging learning rate, a bad label, a
typo in an argument) and asserts what the library now does, including the
message the user reads.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest

import keras_vdiff as kv
from keras_vdiff import atomic_files, cli, training
from keras_vdiff.video_diffusion import VideoDiffusion

TINY = dict(frame_size=8, num_frames=4, backbone=dict(hidden_dim=16, num_layers=2, num_heads=2),
            text_encoder=dict(hidden_dim=16, num_layers=1, num_heads=2))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_pipeline():
    return training.moving_mnist_text_to_video(**TINY)


def _class_model(num_classes=3):
    backbone = kv.models.DiT(image_size=8, in_channels=1, patch_size=4, hidden_dim=16, num_layers=1, num_heads=2,
                             num_classes=num_classes, learn_sigma=False)
    return VideoDiffusion(backbone, kv.diffusion.GaussianDiffusion(kv.diffusion.NoiseSchedule("cosine", num_timesteps=100)), seed=0)


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# --- 1. writes never destroy what the library did not write ------------------------------------------------


def test_save_to_preset_refuses_a_folder_of_user_files_and_names_them(tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "notes.txt").write_text("my notes")
    (project / "data").mkdir()
    (project / "data" / "videos.npy").write_bytes(b"123")
    model = _tiny_pipeline()
    with pytest.raises(FileExistsError, match=r"proj.*2 file\(s\) keras_vdiff did not write.*notes.txt"):
        model.save_to_preset(str(project))
    with pytest.raises(FileExistsError, match="notes.txt"):
        model.backbone.save_to_preset(str(project))
    assert (project / "notes.txt").read_text() == "my notes" and (project / "data" / "videos.npy").exists()
    assert sorted(os.listdir(tmp_path)) == ["proj"]  # no staging folder left behind


def test_save_to_preset_in_the_current_directory_keeps_its_files(tmp_path, monkeypatch):
    (tmp_path / "train.py").write_text("print('mine')")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileExistsError, match="train.py"):
        _tiny_pipeline().save_to_preset(".")
    assert sorted(os.listdir(tmp_path)) == ["train.py"]


def test_a_preset_is_replaced_whole_but_a_user_file_added_to_it_blocks_the_replacement(tmp_path):
    preset = tmp_path / "preset"
    first, second = _tiny_pipeline(), _tiny_pipeline()
    first.save_to_preset(str(preset))
    second.save_to_preset(str(preset))  # the library wrote every file there: replaced
    kwargs = dict(prompts=[training.all_captions()[0]], steps=2, seed=1, compile=False)
    np.testing.assert_array_equal(VideoDiffusion.from_preset(str(preset)).generate(**kwargs), second.generate(**kwargs))
    (preset / "README.txt").write_text("results of my run")
    with pytest.raises(FileExistsError, match="README.txt"):
        first.save_to_preset(str(preset))
    assert (preset / "README.txt").exists()
    # An empty folder is fine; a file where the folder should be is not.
    (tmp_path / "empty").mkdir()
    first.backbone.save_to_preset(str(tmp_path / "empty"))
    assert (tmp_path / "empty" / "config.json").exists()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(FileExistsError, match="a file of that name exists"):
        first.save_to_preset(str(tmp_path / "afile"))


def test_stale_staging_of_a_killed_save_is_cleaned_by_the_next_save(tmp_path):
    dead = _dead_pid()
    stale_dir = tmp_path / f"{atomic_files.STAGING_PREFIX}{dead}-preset-abc123"
    stale_dir.mkdir()
    (stale_dir / "model.weights.h5").write_bytes(b"half")
    stale_file = tmp_path / f"{atomic_files.STAGING_PREFIX}{dead}-loss.png-xyz.png"
    stale_file.write_bytes(b"half")
    live = tmp_path / f"{atomic_files.STAGING_PREFIX}{os.getpid()}-other-def456"  # a save still running
    live.mkdir()
    user = tmp_path / ".tmp-mine"
    user.mkdir()
    with atomic_files.staged_directory(tmp_path / "preset") as staging:
        open(os.path.join(staging, "config.json"), "w").write("{}")
    assert sorted(os.listdir(tmp_path)) == sorted(["preset", live.name, ".tmp-mine"])


def test_a_replacement_interrupted_between_its_renames_is_rolled_back(tmp_path):
    # Where no atomic exchange exists, the old folder is retired first; a kill then leaves it under the
    # retired name and the next write puts it back.
    with atomic_files.staged_directory(tmp_path / "preset") as staging:
        open(os.path.join(staging, "config.json"), "w").write('{"v": 1}')
    retired = tmp_path / f"{atomic_files.RETIRED_PREFIX}{_dead_pid()}-preset-q1w2e3"
    os.rename(tmp_path / "preset", retired)
    atomic_files.clean_stale_staging(str(tmp_path))
    assert json.load(open(tmp_path / "preset" / "config.json")) == {"v": 1}
    assert sorted(os.listdir(tmp_path)) == ["preset"]


_SAVE_LOOP = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {repo!r})
    import keras_vdiff as kv
    backbone = kv.models.DiT(image_size=8, in_channels=1, patch_size=2, hidden_dim=64, num_layers=2, num_heads=2)
    model = kv.VideoDiffusion(backbone, kv.diffusion.GaussianDiffusion("cosine", learn_sigma=True))
    for i in range(1000):
        model.save_to_preset({path!r})
        print("saved", i, flush=True)
""")


def test_a_save_killed_at_any_moment_leaves_a_loadable_preset(tmp_path):
    path = str(tmp_path / "preset")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    child = subprocess.Popen([sys.executable, "-c", _SAVE_LOOP.format(repo=REPO, path=path)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert child.stdout.readline().startswith("saved 0")
        rng = np.random.default_rng(0)
        for _ in range(3):  # let it save a few more times, then kill it at an arbitrary moment
            child.stdout.readline()
            time.sleep(float(rng.uniform(0.0, 0.05)))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    model = VideoDiffusion.from_preset(path)
    assert model.backbone.count_params() > 0
    # The next save cleans whatever the killed one left, and the folder is replaceable.
    model.save_to_preset(path)
    assert os.listdir(tmp_path) == ["preset"]


# --- 2. runs are not overwritten by accident ------------------------------------------------------------------


def test_train_refuses_a_directory_holding_a_run_before_generating_data(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "history.json").write_text(json.dumps({"steps": 119}))
    with pytest.raises(SystemExit, match=r"already holds a run \(history.json\).*--resume.*--overwrite"):
        cli.main(["train", "--steps", "1", "--output-dir", str(run)])
    assert "Generating" not in capsys.readouterr().out
    assert json.load(open(run / "history.json")) == {"steps": 119}
    with pytest.raises(SystemExit, match="give one"):
        cli.main(["train", "--steps", "1", "--output-dir", str(run), "--resume", "--overwrite"])
    (run / "pipeline").mkdir()
    (run / "pipeline" / "my_notes.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="1 file\\(s\\) keras_vdiff did not write \\(my_notes.txt\\)"):
        cli.main(["train", "--steps", "1", "--output-dir", str(run), "--overwrite"])
    assert (run / "pipeline" / "my_notes.txt").read_text() == "keep me"


def test_output_directories_are_checked_writable_before_long_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SystemExit, match="--output-dir .* is a file"):
        cli.main(["train", "--steps", "1", "--output-dir", str(blocker)])
    with pytest.raises(SystemExit, match="--output-dir .* is a file"):
        cli.main(["sample", "--preset", "latte_tiny_moving_mnist", "--prompt", "x", "--output-dir", str(blocker)])
    with pytest.raises(SystemExit, match="--output directory .* is a file"):
        cli.main(["evaluate", "--preset", "latte_tiny_moving_mnist", "--output", str(blocker / "eval.json")])


def test_unknown_config_keys_are_named(tmp_path):
    with pytest.raises(SystemExit, match="--config: Latte got unexpected keyword argument.*'hidden_dimm'"):
        cli.main(["train", "--steps", "1", "--output-dir", str(tmp_path / "a"),
                  "--config", '{"backbone": {"hidden_dimm": 32}}'])
    with pytest.raises(SystemExit, match="--config: .*frame_sise"):
        cli.main(["train", "--steps", "1", "--output-dir", str(tmp_path / "b"), "--config", '{"frame_sise": 16}'])


# --- 3. non-finite training stops, the good checkpoint stays -------------------------------------------------


@pytest.mark.slow  # two training runs (40 s on JAX); the unit tests below cover the stop and the refusal
def test_a_diverging_run_stops_at_the_first_nan_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    checkpoint = str(tmp_path / "pipeline")
    model = _tiny_pipeline()
    data = training.moving_mnist_training_data(model, 16, seed=1)
    training.train(model, data, steps=2, batch_size=8, checkpoint_dir=checkpoint, verbose=0)
    good = VideoDiffusion.from_preset(checkpoint).get_weights()
    model = VideoDiffusion.from_preset(checkpoint)
    model.optimizer.learning_rate = 1e6
    result = training.train(model, data, steps=40, batch_size=8, checkpoint_dir=checkpoint, verbose=0,
                            initial_state=training.load_run_state(checkpoint))
    assert result["stopped_by"] == "non_finite"
    step = int(result["message"].split("at step ")[1].split(";")[0])
    assert 3 <= step < 40 and result["steps"] == step
    assert "last finite loss was" in result["message"] and "Not saving a checkpoint" in capsys.readouterr().out
    kept = VideoDiffusion.from_preset(checkpoint)
    assert training.non_finite_variables(kept) == []
    state = training.load_run_state(checkpoint)
    assert state["steps"] <= step - 1 and all(np.isfinite(state["losses"]))
    if state["steps"] == 2:  # no later epoch was finite: the weights are the first run's
        for before, after in zip(good, kept.get_weights()):
            np.testing.assert_array_equal(before, after)


def test_stop_on_non_finite_loss_names_the_step_and_the_last_finite_loss(capsys):
    callback = training.StopOnNonFiniteLoss(initial_step=10)
    callback.set_model(keras.Sequential([keras.layers.Dense(1)]))
    callback.on_epoch_begin(0)
    for batch, mean in enumerate([2.0, 1.5, float("nan")]):
        callback.on_train_batch_end(batch, {"loss": mean})
    assert callback.step == 13 and callback.last_finite_loss == pytest.approx(1.0)  # 2*1.5 - 1*2.0
    assert callback.model.stop_training and "at step 13; the last finite loss was 1" in capsys.readouterr().out


def test_the_checkpoint_refuses_non_finite_weights(tmp_path):
    model = _class_model()
    weights = model.get_weights()
    weights[0] = np.full_like(weights[0], np.nan)
    model.set_weights(weights)
    with pytest.raises(FloatingPointError, match="Not saving a checkpoint.*non-finite"):
        training.save_checkpoint(model, str(tmp_path / "ckpt"), {"steps": 1})
    assert os.listdir(tmp_path) == []


def test_generate_reports_non_finite_samples_and_guidance(tmp_path):
    model = _class_model()
    with pytest.raises(ValueError, match="`guidance_scale` must be a finite number, got nan"):
        model.generate(labels=[0], steps=2, guidance_scale=float("nan"))
    weights = model.backbone.get_weights()
    model.backbone.set_weights([np.full_like(w, np.nan) for w in weights])
    with pytest.raises(FloatingPointError, match="non-finite values.*backbone weights are non-finite"):
        model.generate(labels=[0], steps=2, compile=False)


_KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {repo!r})
    from keras_vdiff import cli
    from keras_vdiff.training import checkpoints

    save = checkpoints.save_checkpoint

    def save_then_die(model, directory, state):  # SIGKILL right after the first epoch's checkpoint
        save(model, directory, state)
        os.kill(os.getpid(), signal.SIGKILL)

    checkpoints.save_checkpoint = save_then_die
    cli.main({argv!r})
""")


@pytest.mark.slow
def test_a_run_killed_and_resumed_matches_an_uninterrupted_run(tmp_path):
    argv = ["train", "--config", json.dumps(TINY), "--num-videos", "16", "--batch-size", "4", "--samples", "0",
            "--steps", "8", "--ema", "0"]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert cli.main(argv + ["--output-dir", str(whole)]) == 0
    child = subprocess.run([sys.executable, "-c", _KILLED_RUN.format(repo=REPO, argv=argv + ["--output-dir", str(broken)])],
                           env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    assert training.load_run_state(str(broken / "pipeline"))["steps"] == 4  # one epoch of 4 batches
    assert cli.main(argv + ["--output-dir", str(broken), "--resume"]) == 0
    expected, resumed = json.load(open(whole / "history.json")), json.load(open(broken / "history.json"))
    assert resumed["steps"] == expected["steps"] == 8
    assert len(resumed["losses"]) == len(expected["losses"]) == 8
    np.testing.assert_allclose(resumed["losses"], expected["losses"], rtol=1e-4)


# --- 4. input checks at the public entry points --------------------------------------------------------------


def test_labels_outside_the_classes_stop_fit_before_training(backend):
    model = _class_model(num_classes=3)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    videos = np.zeros((4, 8, 8, 1), np.uint8)
    for labels, shown in (([0, 1, 3, 2], r"\[3\]"), ([0, -1, 1, 2], r"\[-1\]")):
        with pytest.raises(ValueError, match=r"`labels` must lie in \[0, 3\); got " + shown):
            model.fit({"videos": videos, "labels": np.array(labels)}, epochs=1, batch_size=4, verbose=0)
    # A failed fit leaves the model usable: the next correct fit trains.
    history = model.fit({"videos": videos, "labels": np.array([0, 1, 2, 0])}, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][-1])


def test_a_bad_label_inside_the_step_makes_the_loss_nan_on_every_backend(backend):
    model = _class_model(num_classes=3)
    videos = keras.ops.convert_to_tensor(np.zeros((4, 8, 8, 1), np.uint8))
    good = model.compute_loss(x={"videos": videos, "labels": keras.ops.convert_to_tensor([0, 1, 2, 0])})
    bad = model.compute_loss(x={"videos": videos, "labels": keras.ops.convert_to_tensor([0, 1, 7, 0])})
    negative = model.compute_loss(x={"videos": videos, "labels": keras.ops.convert_to_tensor([0, -1, 2, 0])})
    assert np.isfinite(keras.ops.convert_to_numpy(good))
    assert np.isnan(keras.ops.convert_to_numpy(bad)) and np.isnan(keras.ops.convert_to_numpy(negative))


def test_a_failed_fit_leaves_the_model_usable(backend):
    model = _class_model(num_classes=3)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    with pytest.raises(Exception):
        model.fit({"videos": np.zeros((4, 8, 8, 3), np.uint8), "labels": np.zeros(4, np.int32)}, epochs=1,
                  batch_size=4, verbose=0)  # 3 channels for a 1-channel DiT: fails inside the train step
        # (a 16x16 frame size no longer fails: DiT takes any size its patches divide, `at_shape`)
    history = model.fit({"videos": np.zeros((4, 8, 8, 1), np.uint8), "labels": np.zeros(4, np.int32)}, epochs=1,
                        batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][-1])


def test_backbone_calls_name_the_input_that_does_not_fit():
    backbone = kv.models.DiT(image_size=8, in_channels=4, patch_size=2, hidden_dim=16, num_layers=1, num_heads=2,
                             num_classes=3, learn_sigma=False)
    inputs = {"latents": np.zeros((2, 8, 8, 3), np.float32), "timesteps": np.zeros(2, np.float32),
              "class_labels": np.zeros(2, np.int32)}
    with pytest.raises(ValueError, match=r"Input `latents` of DiT has shape \(2, 8, 8, 3\); expected .*8, 8, 4"):
        backbone(inputs)
    inputs["latents"] = np.zeros((2, 8, 8, 4), np.float32)
    with pytest.raises(ValueError, match=r"`class_labels` must lie in \[0, 3\].*from 0 to 5"):
        backbone(dict(inputs, class_labels=np.array([0, 5])))
    with pytest.raises(ValueError, match="disagree on the batch size"):
        backbone(dict(inputs, timesteps=np.zeros(3, np.float32)))
    latte = kv.models.Latte.from_preset("latte_tiny", conditioning="text", text_dim=8)
    text = {"latents": np.zeros((1,) + latte.latent_shape, np.float32), "timesteps": np.zeros(1, np.float32),
            "text_embeddings": np.zeros((1, 5, 8), np.float32), "text_mask": np.ones((1, 4), np.float32),
            "pooled_text": np.zeros((1, 8), np.float32)}
    with pytest.raises(ValueError, match=r"`text_mask` has shape \(1, 4\) but `text_embeddings` has \(1, 5, 8\)"):
        latte(text)


def test_generate_checks_labels_prompts_and_seeds():
    model = _class_model(num_classes=3)
    with pytest.raises(ValueError, match="`labels` is empty"):
        model.generate(labels=[], steps=2)
    with pytest.raises(ValueError, match=r"`labels` must lie in \[0, 3\] \(3 is the null class\); got \[4\]"):
        model.generate(labels=[0, 4], steps=2)
    with pytest.raises(ValueError, match="`labels` must be integer class labels"):
        model.generate(labels=[0.5], steps=2)
    for seed in (-1, 2**31, 1.5):
        with pytest.raises(ValueError, match=r"`seed` must be None or an integer in \[0, 2147483646\]"):
            model.generate(labels=[0], steps=2, seed=seed)
    a = model.generate(labels=[0], steps=2, seed=None, compile=False)
    assert a.shape == (1, 1, 8, 8, 1)  # a fresh seed, documented
    text = _tiny_pipeline()
    for prompts in ([], [1, 2], 7):
        with pytest.raises(ValueError, match="`prompts` must"):
            text.generate(prompts=prompts, steps=2)


def test_unknown_keyword_arguments_raise_a_type_error_listing_the_valid_ones():
    with pytest.raises(TypeError, match=r"Latte got unexpected keyword argument\(s\) 'hidden_dimm'.*hidden_dim"):
        kv.models.Latte(input_shape=(2, 8, 8, 1), patch_size=4, hidden_dim=16, num_layers=1, num_heads=2,
                        hidden_dimm=64)
    with pytest.raises(TypeError, match=r"DiT\.from_preset got unexpected keyword argument\(s\) 'num_clases'.*num_classes"):
        kv.models.DiT.from_preset("dit_tiny", num_clases=10)


def test_moving_mnist_with_one_frame_cannot_claim_motion():
    with pytest.raises(ValueError, match="`num_frames` must be at least 2"):
        kv.data.moving_mnist(2, frame_size=16, num_frames=1)


def test_truncated_or_mismatched_weight_files_are_named(tmp_path):
    preset = tmp_path / "preset"
    _tiny_pipeline().save_to_preset(str(preset))
    for name in ("model.weights.h5", "task.weights.h5"):
        broken = tmp_path / f"broken_{name}"
        broken.mkdir()
        for source in preset.iterdir():
            data = source.read_bytes()
            (broken / source.name).write_bytes(data[: len(data) // 2] if source.name == name else data)
        with pytest.raises(ValueError, match=f"(?s)Cannot load the weights file .*{name}.*truncated"):
            VideoDiffusion.from_preset(str(broken))
    other = tmp_path / "other"
    _class_model().backbone.save_to_preset(str(other))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for source in preset.iterdir():
        donor = other / source.name if source.name == "model.weights.h5" else source
        (mixed / source.name).write_bytes(donor.read_bytes())
    with pytest.raises(ValueError, match="(?s)Cannot load the weights file .*model.weights.h5.*another model configuration"):
        VideoDiffusion.from_preset(str(mixed))


def test_the_task_rejects_unknown_keyword_arguments():
    backbone = _class_model().backbone
    with pytest.raises(TypeError, match=r"VideoDiffusion got unexpected keyword argument\(s\) 'condition_dropuot'.*condition_dropout"):
        VideoDiffusion(backbone, condition_dropuot=0.2)
