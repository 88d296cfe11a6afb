"""Progressive and guided distillation (keras_vdiff/tasks/distillation.py) against numpy references."""

import keras
import numpy as np
import pytest

from conftest import to_numpy
from harness import randomise
from keras_vdiff.diffusion.gaussian import GaussianDiffusion
from keras_vdiff.models.latte import Latte
from keras_vdiff.tasks import GuidanceConditionedDiffusion, GuidedDistillation, ProgressiveDistillation, VideoDiffusion
from keras_vdiff.text.small_text_encoder import SmallTextEncoder

FRAMES, SIZE = 2, 4
CAPTIONS = ["a digit moving up", "a digit moving left"]
T = 1000
RUN_EAGERLY = False


def text_teacher(prediction="v", seed=0):
    encoder = SmallTextEncoder.from_texts(CAPTIONS, hidden_dim=8, num_layers=1, num_heads=2)
    backbone = Latte(input_shape=(FRAMES, SIZE, SIZE, 1), patch_size=2, hidden_dim=16, num_layers=2, num_heads=2,
                     conditioning="text", text_dim=8, learn_sigma=False)
    teacher = VideoDiffusion(backbone, GaussianDiffusion("cosine", prediction=prediction), text_encoder=encoder,
                             seed=seed)
    return randomise(teacher, seed=seed, scale=0.3)


def text_conditions(teacher, captions=CAPTIONS):
    embeddings, mask, pooled = teacher.text_encoder(teacher.text_encoder.tokenizer(captions))
    return {"text_embeddings": embeddings, "text_mask": mask, "pooled_text": pooled}


def numpy_output(backbone, z, timesteps, conditions):
    inputs = dict(conditions, latents=keras.ops.convert_to_tensor(z.astype(np.float32)),
                  timesteps=keras.ops.convert_to_tensor(np.asarray(timesteps, np.float32)))
    return to_numpy(backbone(inputs)).astype(np.float64)


def null_text(conditions):
    return {key: keras.ops.zeros_like(value) for key, value in conditions.items()}


def trailing(steps):
    return (np.round(np.arange(T, 0, -T / steps)) - 1).astype(int)


def reference_target(teacher, latents, noise, k, conditions, student_steps, guidance, prediction):
    """Two teacher DDIM steps (separate conditional and null passes) and the one-step target, float64 numpy.

    Also checks what the target is for: one student DDIM step from z_t with it lands on the teacher's z_t''.
    """
    abar = teacher.process.schedule.alphas_cumprod.astype(np.float64)
    grid = trailing(2 * student_steps)
    abar_grid = np.append(abar[grid], 1.0)
    a, s = np.sqrt(abar_grid), np.sqrt(1.0 - abar_grid)
    i = 2 * k.astype(int)
    shape = (-1,) + (1,) * (latents.ndim - 1)
    coef = lambda table, j: table[j].reshape(shape)  # noqa: E731
    z_t = coef(a, i) * latents + coef(s, i) * noise
    z = z_t
    for j in (i, i + 1):
        cond = numpy_output(teacher.backbone, z, grid[j], conditions)
        null = numpy_output(teacher.backbone, z, grid[j], null_text(conditions))
        out = null + guidance * (cond - null)
        if teacher.process.prediction == "v":
            x0, eps = coef(a, j) * z - coef(s, j) * out, coef(s, j) * z + coef(a, j) * out
        else:
            x0, eps = (z - coef(s, j) * out) / coef(a, j), out
        z = coef(a, j + 1) * x0 + coef(s, j + 1) * eps
    ratio = coef(s, i + 2) / coef(s, i)
    x_target = (z - ratio * z_t) / (coef(a, i + 2) - ratio * coef(a, i))
    eps_target = (z_t - coef(a, i) * x_target) / coef(s, i)
    landed = coef(a, i + 2) * x_target + coef(s, i + 2) * eps_target  # the student's DDIM step
    np.testing.assert_allclose(landed, z, atol=1e-9)
    return coef(a, i) * eps_target - coef(s, i) * x_target if prediction == "v" else eps_target


@pytest.mark.parametrize("prediction", ["v", "epsilon"])
def test_progressive_target_matches_two_numpy_ddim_teacher_steps(prediction):
    """Also checks the guided teacher output (one stacked forward) against separate passes, via the target."""
    teacher = text_teacher(prediction)
    distiller = ProgressiveDistillation(teacher, student_steps=4, guidance_scale=2.0, seed=0)
    rng = np.random.default_rng(0)
    latents = rng.uniform(-1, 1, (4, FRAMES, SIZE, SIZE, 1)).astype(np.float32)
    noise = rng.standard_normal(latents.shape).astype(np.float32)
    k = np.array([0, 1, 2, 3], np.int32)  # every student point, the last one into the clean sample
    conditions = text_conditions(teacher, CAPTIONS * 2)
    _, _, target, _, _ = distiller.distillation_targets(
        keras.ops.convert_to_tensor(latents), keras.ops.convert_to_tensor(noise), keras.ops.convert_to_tensor(k),
        conditions, keras.ops.full((4,), 2.0))
    expected = reference_target(teacher, latents, noise, k, conditions, 4, 2.0, prediction)
    error = np.max(np.abs(to_numpy(target) - expected)) / np.max(np.abs(expected))
    assert error < 1e-5, error


def test_guided_distillation_student_inputs():
    teacher = text_teacher()
    guided = GuidedDistillation(teacher, guidance_range=(2.0, 4.0), seed=0)
    student = guided.student
    assert isinstance(student, GuidanceConditionedDiffusion) and student.guidance_range == (2.0, 4.0)
    conditions = text_conditions(teacher, CAPTIONS * 2)  # batch 4, as elsewhere: shared op shapes
    rng = np.random.default_rng(2)
    z = rng.standard_normal((4, FRAMES, SIZE, SIZE, 1)).astype(np.float32)
    inputs = dict(conditions, latents=keras.ops.convert_to_tensor(z),
                  timesteps=keras.ops.convert_to_tensor(np.array([100.0, 700.0, 300.0, 999.0], np.float32)))
    w = keras.ops.convert_to_tensor(np.array([2.0, 4.0, 3.0, 2.5], np.float32))
    embedded = student.with_guidance(inputs, w)
    assert tuple(embedded["pooled_text"].shape) == (4, 8)
    # Fresh: the embedding is zero, the student is the teacher's conditional model.
    np.testing.assert_allclose(to_numpy(embedded["pooled_text"]), to_numpy(conditions["pooled_text"]), atol=1e-7)
    np.testing.assert_allclose(to_numpy(student.backbone(embedded)), to_numpy(teacher.backbone(inputs)), atol=1e-6)
    # With weights, w reaches the backbone: different scales, different predictions for the same z_t.
    randomise(student.guidance_embedding, seed=3, scale=0.5)
    pooled = to_numpy(student.with_guidance(inputs, w)["pooled_text"]) - to_numpy(conditions["pooled_text"])
    expected = to_numpy(student.guidance_embedding(w))
    np.testing.assert_allclose(pooled, expected, atol=1e-6)
    assert np.abs(expected[0] - expected[1]).max() > 1e-3
    same = keras.ops.convert_to_tensor(np.full((4,), 2.0, np.float32))
    out_w = to_numpy(student.backbone(student.with_guidance(inputs, w)))
    out_same = to_numpy(student.backbone(student.with_guidance(inputs, same)))
    np.testing.assert_allclose(out_w[0], out_same[0], atol=1e-6)
    assert np.abs(out_w[1] - out_same[1]).max() > 1e-4
    # Sampling: one row per video (no null pass) and the scale's embedding in the plan.
    plan = student.prepare_generation(prompts=CAPTIONS, guidance_scale=3.0, compile=False)
    assert not plan["use_guidance"] and int(plan["conditions"]["pooled_text"].shape[0]) == 2
    vector = to_numpy(plan["task_inputs"]["guidance_vector"])
    np.testing.assert_allclose(vector, to_numpy(student.guidance_embedding(keras.ops.full((2,), 3.0))), atol=1e-6)
    with pytest.raises(ValueError, match="guidance_scale.*outside"):
        student.prepare_generation(prompts=CAPTIONS, guidance_scale=6.0)


def batch(teacher, n=4):
    captions = [CAPTIONS[i % 2] for i in range(n)]
    videos = np.random.default_rng(5).integers(0, 256, (n, FRAMES, SIZE, SIZE, 1)).astype(np.uint8)
    return {"videos": videos, "captions": teacher.text_encoder.tokenizer(captions)}


def fit_once(distiller, data):
    teacher_before = [w.copy() for w in distiller.teacher.get_weights()]
    student_before = [to_numpy(w).copy() for w in distiller.trainable_variables]
    distiller.compile(optimizer=keras.optimizers.AdamW(1e-2), run_eagerly=RUN_EAGERLY)
    loss = distiller.fit(data, batch_size=4, epochs=1, verbose=0).history["loss"]
    assert np.all(np.isfinite(loss)) and loss[0] > 0
    for before, after in zip(teacher_before, distiller.teacher.get_weights()):
        np.testing.assert_array_equal(before, after)
    changed = [not np.allclose(b, to_numpy(w)) for b, w in zip(student_before, distiller.trainable_variables)]
    assert any(changed)


# Slow (3-4 min on JAX on the shared CPU: two compiled train steps); the fast sibling below computes both losses
# eagerly and checks the student as a pipeline.
@pytest.mark.slow
def test_one_fit_step_of_each_distillation():
    teacher = text_teacher()
    data = batch(teacher)
    guided = GuidedDistillation(teacher, guidance_range=(2.0, 4.0), seed=0)
    fit_once(guided, data)
    progressive = ProgressiveDistillation(guided.student, student_steps=2, seed=0)
    fit_once(progressive, data)


def test_distillation_losses_and_the_student_is_a_pipeline(tmp_path):
    teacher = text_teacher()
    data = batch(teacher)
    data = {"videos": keras.ops.convert_to_tensor(data["videos"]), "captions": data["captions"]}
    guided = GuidedDistillation(teacher, guidance_range=(2.0, 4.0), seed=0)
    trained = {id(w) for w in guided.trainable_variables}
    assert {id(w) for w in guided.student.guidance_embedding.trainable_weights} <= trained
    assert {id(w) for w in guided.student.backbone.trainable_weights} <= trained
    assert not trained & {id(w) for w in teacher.weights}  # the teacher (and the text encoder) stay frozen
    assert not trained & {id(w) for w in guided.student.text_encoder.weights}
    progressive = ProgressiveDistillation(guided.student, student_steps=2, seed=0)
    assert progressive.guidance_range == (2.0, 4.0)
    for distiller in (guided, progressive):
        loss = float(to_numpy(distiller.compute_loss(x=data)))
        assert np.isfinite(loss) and loss > 0
    student = progressive.student
    assert (student.sampler, student.sampler_options) == ("ddim", {"timestep_spacing": "trailing"})
    videos = student.generate(prompts=CAPTIONS * 2, steps=2, guidance_scale=3.0, seed=0, compile=False)
    assert videos.shape == (4, FRAMES, SIZE, SIZE, 1) and videos.dtype == np.uint8
    # A normal pipeline preset: the w embedding (a task weight) and the sampler survive the round trip.
    randomise(student.guidance_embedding, seed=3, scale=0.5)
    videos = student.generate(prompts=CAPTIONS * 2, steps=2, guidance_scale=3.0, seed=0, compile=False)
    student.save_to_preset(str(tmp_path / "student"), include_optimizer=False)
    restored = VideoDiffusion.from_preset(str(tmp_path / "student"))
    assert isinstance(restored, GuidanceConditionedDiffusion) and restored.sampler_options == student.sampler_options
    again = restored.generate(prompts=CAPTIONS * 2, steps=2, guidance_scale=3.0, seed=0, compile=False)
    np.testing.assert_array_equal(videos, again)
    with pytest.raises(NotImplementedError, match="student"):
        progressive.get_config()


def test_plain_progressive_round_and_bad_arguments():
    teacher = text_teacher()
    distiller = ProgressiveDistillation(teacher, student_steps=2, guidance_scale=2.0, seed=0)
    assert type(distiller.student) is VideoDiffusion and distiller.guidance_scale == 2.0
    with pytest.raises(ValueError, match="student_steps"):
        ProgressiveDistillation(teacher, student_steps=0)
    with pytest.raises(ValueError, match="weighting"):
        ProgressiveDistillation(teacher, weighting="snr")
    with pytest.raises(ValueError, match="guidance_range"):
        ProgressiveDistillation(teacher, guidance_range=(1.0, 2.0))
    with pytest.raises(ValueError, match="guidance_range"):
        GuidedDistillation(teacher, guidance_range=(4.0, 2.0))


def test_the_shipped_distilled_preset_is_a_guidance_conditioned_eight_step_pipeline():
    model = VideoDiffusion.from_preset("latte_tiny_moving_mnist_distilled")
    assert isinstance(model, GuidanceConditionedDiffusion)
    assert (model.sampler, model.sampler_options) == ("ddim", {"timestep_spacing": "trailing"})
    low, high = model.guidance_range
    assert low <= 3.0 <= high
    # The w embedding was trained: it is no longer the zero map of a fresh student.
    assert np.abs(to_numpy(model.guidance_embedding(keras.ops.full((1,), 3.0)))).max() > 1e-4


def test_a_round_can_fold_the_guidance_into_a_guidance_conditioned_student():
    """Plain guided teacher -> w-conditioned student in one round: the scales reach teacher and student."""
    teacher = text_teacher()
    student = GuidanceConditionedDiffusion.from_teacher(teacher, guidance_range=(2.0, 4.0))
    distiller = ProgressiveDistillation(teacher, student=student, student_steps=2, seed=0)
    assert distiller.guidance_range == (2.0, 4.0) and distiller.guidance_scale is None
    assert distiller.student is student
    trained = {id(w) for w in distiller.trainable_variables}
    assert {id(w) for w in student.guidance_embedding.trainable_weights} <= trained
    assert not trained & {id(w) for w in teacher.weights}
    randomise(student.guidance_embedding, seed=3, scale=0.5)
    conditions = text_conditions(teacher, CAPTIONS * 2)
    z = keras.ops.convert_to_tensor(np.random.default_rng(1).standard_normal((4, FRAMES, SIZE, SIZE, 1)), "float32")
    w = keras.ops.convert_to_tensor(np.array([2.0, 4.0, 3.0, 2.5], np.float32))
    inputs = distiller.student_inputs(z, keras.ops.convert_to_tensor(np.array([0, 1, 0, 1], np.int32)), conditions, w)
    np.testing.assert_allclose(to_numpy(inputs["pooled_text"]) - to_numpy(conditions["pooled_text"]),
                               to_numpy(student.guidance_embedding(w)), atol=1e-6)
    data = batch(teacher)
    loss = float(to_numpy(distiller.compute_loss(x={"videos": keras.ops.convert_to_tensor(data["videos"]),
                                                    "captions": data["captions"]})))
    assert np.isfinite(loss) and loss > 0
    fixed = ProgressiveDistillation(teacher, student=GuidanceConditionedDiffusion.from_teacher(teacher, (2.0, 4.0)),
                                    student_steps=2, guidance_scale=3.0)
    assert fixed.guidance_scale == 3.0 and fixed.guidance_range is None
    with pytest.raises(ValueError, match="student's `guidance_range`"):
        ProgressiveDistillation(teacher, student=GuidanceConditionedDiffusion.from_teacher(teacher, (2.0, 4.0)),
                                guidance_scale=5.0)
    with pytest.raises(ValueError, match="not both"):
        ProgressiveDistillation(teacher, student=GuidanceConditionedDiffusion.from_teacher(teacher, (2.0, 4.0)),
                                guidance_scale=3.0, guidance_range=(2.0, 3.0))
