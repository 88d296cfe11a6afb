"""The training job, its files and the ``keras-vdiff`` CLI, on a tiny MovingMNIST model."""

import json
import os
import time

import keras
import numpy as np
import pytest
from PIL import Image

from keras_vdiff import cli, training
from keras_vdiff.video_diffusion import VideoDiffusion

TINY = dict(frame_size=8, num_frames=4, backbone=dict(hidden_dim=16, num_layers=2, num_heads=2),
            text_encoder=dict(hidden_dim=16, num_layers=1, num_heads=2))


def test_train_runs_the_step_budget_records_per_step_losses_and_checkpoints(tmp_path):
    model = training.moving_mnist_text_to_video(**TINY)
    assert model.backbone.latent_shape == (4, 8, 8, 1)
    data = training.moving_mnist_training_data(model, 40, seed=1)
    result = training.train(model, data, steps=5, batch_size=8, checkpoint_dir=str(tmp_path / "ckpt"), verbose=0,
                            learning_rate_schedule="cosine", warmup_steps=2)
    # 40 videos / batch 8 = 5 batches per epoch: the budget ends fit after exactly 5 steps.
    assert result["steps"] == 5 and result["stopped_by"] == "steps"
    # The last step ran at the cosine's rate for step 4 of 5 (after a 2-step warm-up).
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(
        1e-3 * 0.5 * (1 + np.cos(np.pi * 4 / 5)), rel=1e-5)
    assert len(result["losses"]) == 5 and np.all(np.isfinite(result["losses"]))
    state = json.load(open(tmp_path / "ckpt" / "state.json"))
    assert state["steps"] == 5
    restored = VideoDiffusion.from_preset(str(tmp_path / "ckpt"))
    kwargs = dict(prompts=[training.all_captions()[4]], steps=2, guidance_scale=2.0, seed=3, compile=False)
    np.testing.assert_array_equal(model.generate(**kwargs), restored.generate(**kwargs))
    # A checkpoint keeps the optimizer (exact resume); a preset to ship drops it.
    assert restored.optimizer is not None and len(restored.optimizer.variables) > 0
    model.save_to_preset(str(tmp_path / "ship"), include_optimizer=False)
    shipped = VideoDiffusion.from_preset(str(tmp_path / "ship"))
    assert getattr(shipped, "optimizer", None) is None
    def size(folder):
        return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())

    assert size(tmp_path / "ship") < size(tmp_path / "ckpt")
    np.testing.assert_array_equal(shipped.generate(**kwargs), restored.generate(**kwargs))


def test_time_budget_prints_steps_and_budget_instead_of_a_huge_epoch_count(capsys):
    model = training.moving_mnist_text_to_video(**TINY)
    data = training.moving_mnist_training_data(model, 16, seed=1)
    result = training.train(model, data, max_seconds=1e-3, batch_size=8, verbose=1)
    assert result["stopped_by"] == "time" and result["steps"] == 1
    out = capsys.readouterr().out
    assert "1000000" not in out
    assert "epoch 1: step 1, loss " in out and "of 0:00" in out


def test_step_losses_undo_the_running_mean():
    callback = training.StepLosses()
    callback.on_train_begin()
    callback.on_epoch_begin(0)
    step_losses = [4.0, 2.0, 3.0]
    for batch, _ in enumerate(step_losses):
        callback.on_train_batch_end(batch, {"loss": np.mean(step_losses[: batch + 1])})
    np.testing.assert_allclose(callback.losses, step_losses, rtol=1e-12)


def test_budget_learning_rate_sets_the_rate_of_every_step_mid_epoch_too():
    # w <- w - lr_k * dL/dw with L = mean((w * 1)^2): dL/dw = 2 w, so the final weight is a product of the
    # per-step rates; 4 steps per epoch, stopped after 6: the rate must reach steps inside an epoch as well.
    x, y = np.ones((8, 1), "float32"), np.zeros((8, 1), "float32")
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    budget = training.TrainingBudget(max_steps=6)
    schedule = training.BudgetLearningRate(budget, peak=0.1, warmup_steps=2)
    model.fit(x, y, batch_size=2, epochs=2, callbacks=[schedule, budget], verbose=0, shuffle=False)
    expected_rates = [0.1 * min(1.0, (k + 1) / 2) * 0.5 * (1 + np.cos(np.pi * k / 6)) for k in range(6)]
    np.testing.assert_allclose([rate for _, rate in schedule.rates], expected_rates, rtol=1e-12)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.layers[0].kernel)[0, 0],
                               np.prod([1 - 2 * rate for rate in expected_rates]), rtol=1e-5)


def test_warmup_cosine_follows_the_budget_and_its_callback_rejects_what_it_cannot_decay_over():
    assert training.warmup_cosine(2.0, step=100, progress=0.0) == pytest.approx(2.0)
    assert training.warmup_cosine(2.0, step=100, progress=0.5, final_fraction=0.5) == pytest.approx(1.5)
    assert training.warmup_cosine(2.0, step=100, progress=1.0) == pytest.approx(0.0)
    assert training.warmup_cosine(2.0, step=0, progress=0.0, warmup_steps=4) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="max_steps"):
        training.BudgetLearningRate(training.TrainingBudget(), peak=1e-3)
    with pytest.raises(ValueError, match="final_fraction"):
        training.BudgetLearningRate(training.TrainingBudget(max_steps=2), peak=1e-3, final_fraction=2.0)
    # A time budget: the progress is the fraction of its seconds used.
    budget = training.TrainingBudget(max_steps=1000, max_seconds=10.0)
    budget._start = time.perf_counter() - 5.0
    assert training.BudgetLearningRate(budget, peak=1.0).progress() == pytest.approx(0.5, abs=0.05)


def test_train_rejects_bad_arguments():
    model = training.moving_mnist_text_to_video(**TINY)
    data = {"videos": np.zeros((4, 4, 8, 8, 1), np.uint8), "captions": training.all_captions()[:4]}
    with pytest.raises(ValueError, match="needs an end"):
        training.train(model, data)
    with pytest.raises(ValueError, match="`steps`"):
        training.train(model, data, steps=0)
    with pytest.raises(ValueError, match="no batch"):
        training.train(model, data, steps=1, batch_size=8)
    with pytest.raises(ValueError, match="`videos`"):
        training.train(model, {"captions": []}, steps=1)
    with pytest.raises(ValueError, match="learning_rate_schedule.*'linear'"):
        training.train(model, data, steps=1, learning_rate_schedule="linear")
    with pytest.raises(ValueError, match="`warmup_steps` must be an integer >= 0, got -1"):
        training.train(model, data, steps=1, warmup_steps=-1)


def test_plot_contact_sheet_and_sample_files(tmp_path):
    rng = np.random.default_rng(0)
    videos = rng.integers(0, 256, size=(3, 5, 6, 7, 1), dtype=np.uint8)
    sheet = training.contact_sheet(videos, str(tmp_path / "sheet.png"), scale=2)
    image = np.asarray(Image.open(sheet))
    assert image.shape == (2 * (3 * 7 - 1), 2 * (5 * 8 - 1))  # rows: videos, columns: frames, 1-px gaps
    # Frame 2 of video 1 sits at row block 1, column block 2 (nearest-neighbour x2).
    np.testing.assert_array_equal(image[2 * 7:2 * 7 + 12:2, 2 * 16:2 * 16 + 14:2], videos[1, 2, ..., 0])
    paths = training.write_samples(videos, ["a", "b", "c"], str(tmp_path / "gifs"), scale=1)
    assert [os.path.basename(p) for p in paths] == ["a.gif", "b.gif", "c.gif"]
    plot = training.plot_loss(np.linspace(1.0, 0.1, 40), str(tmp_path / "loss.png"))
    assert Image.open(plot).size[0] > 100
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".tmp")]  # nothing half-written
    with pytest.raises(ValueError, match="`names`"):
        training.write_samples(videos, ["a"], str(tmp_path))
    with pytest.raises(ValueError, match="empty"):
        training.plot_loss([], str(tmp_path / "empty.png"))
    assert training.slug("The digit 7 is moving left and right") == "the_digit_7_is_moving_left_and_right"


def test_cli_sample_writes_videos_and_a_contact_sheet_and_lists_presets(tmp_path, capsys):
    preset = tmp_path / "pipeline"
    training.moving_mnist_text_to_video(**TINY).save_to_preset(str(preset))  # untrained: plumbing only
    out = tmp_path / "samples"
    assert cli.main(["sample", "--preset", str(preset), "--prompt", "The digit 1 is moving up and down",
                     "--prompt", "The digit 2 is moving to and fro", "--steps", "2", "--format", "gif,mp4",
                     "--output-dir", str(out)]) == 0
    assert sorted(os.listdir(out)) == sorted([
        "00_the_digit_1_is_moving_up_and_down.gif", "00_the_digit_1_is_moving_up_and_down.mp4",
        "01_the_digit_2_is_moving_to_and_fro.gif", "01_the_digit_2_is_moving_to_and_fro.mp4",
        "contact_sheet.png", "contact_sheet.json"])
    # Contact sheet: 2 videos x 4 frames of 8x8, 1-px gaps, upscaled 4x.
    assert np.asarray(Image.open(out / "contact_sheet.png")).shape == (4 * (2 * 9 - 1), 4 * (4 * 9 - 1))
    capsys.readouterr()
    assert cli.main(["presets", "--kind", "backbone"]) == 0
    listing = capsys.readouterr().out
    assert "latte_tiny" in listing and "dit_xlarge_patch2" in listing


@pytest.mark.slow
def test_cli_train_resume_and_evaluate(tmp_path, capsys):
    run = tmp_path / "run"
    config = json.dumps(TINY)
    assert cli.main(["train", "--config", config, "--num-videos", "32", "--batch-size", "8", "--steps", "3",
                     "--output-dir", str(run), "--samples", "1"]) == 0
    for name in ("loss.png", "history.json", "pipeline/config.json", "pipeline/task.json", "pipeline/state.json"):
        assert (run / name).exists(), name
    assert json.load(open(run / "history.json"))["steps"] == 3
    assert len(os.listdir(run / "samples")) == 1
    # --resume continues from the checkpoint: --steps counts the whole run.
    assert cli.main(["train", "--num-videos", "16", "--batch-size", "8", "--steps", "4", "--output-dir", str(run),
                     "--resume", "--samples", "0", "--learning-rate", "2e-4"]) == 0
    assert f"Resuming from {run / 'pipeline'} at step 3" in capsys.readouterr().out
    assert json.load(open(run / "history.json"))["steps"] == 4
    resumed = VideoDiffusion.from_preset(str(run / "pipeline"))
    assert float(keras.ops.convert_to_numpy(resumed.optimizer.learning_rate)) == pytest.approx(2e-4)
    report = tmp_path / "eval.json"
    assert cli.main(["evaluate", "--preset", str(run / "pipeline"), "--samples-per-caption", "1", "--steps", "2",
                     "--output", str(report)]) == 0
    result = json.load(open(report))
    assert result["num_videos"] == 30 and 0.0 <= result["conditional_accuracy"]["overall"] <= 1.0
    assert np.isfinite(result["frechet_distance"]) and (tmp_path / "eval.md").exists()


def test_cli_errors_name_the_option(tmp_path):
    with pytest.raises(SystemExit, match="--steps, --max-minutes"):
        cli.main(["train", "--output-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="--preset"):
        cli.main(["sample", "--preset", "no_such_preset", "--prompt", "x"])
    with pytest.raises(SystemExit, match="--resume"):
        cli.main(["train", "--steps", "1", "--output-dir", str(tmp_path / "fresh"), "--resume"])
    with pytest.raises(SystemExit):
        cli.main(["sample", "--preset", "x", "--prompt", "y", "--steps", "0"])  # argparse: positive int
    with pytest.raises(SystemExit):
        cli.main(["train", "--steps", "1", "--output-dir", str(tmp_path / "w"), "--warmup-steps", "-1"])
