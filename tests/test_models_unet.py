"""UNet2D, VDMUNet and Make-A-Video inflation: shapes, configs, inflation identity, joint training, freezing."""

import numpy as np
import pytest

from conftest import to_numpy
from harness import randomise, run_backbone_test, run_model_saving_test, run_preset_test
from keras_vdiff.models import MakeAVideoUNet, UNet2D, VDMUNet, inflate_unet

B, F, S, C = 2, 3, 8, 2
SMALL = dict(image_size=S, in_channels=C, dim=8, dim_mults=(1, 2), num_res_blocks=1, attention_resolutions=(4,),
             num_heads=2, norm_groups=4)
IDENTITY_TOL = 1e-4  # float32: the same sums in a different order (video folds frames into the batch)


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _randomise(model, seed=0, scale=0.3):
    randomise(model, seed=seed, scale=scale)


T = np.array([5.0, 600.0], "float32")
LABELS = np.array([1, 3], "int32")  # 3 = the null class


@pytest.fixture(scope="module")
def unet_2d():
    unet = UNet2D(conditioning="class", num_classes=3, **SMALL)
    _randomise(unet, seed=1)
    return unet


@pytest.fixture(scope="module")
def video_unet(unet_2d):
    """Make-A-Video inflation with fps conditioning and masked-frame channels (C + 1)."""
    return inflate_unet(unet_2d, num_frames=F, fps_conditioning=True, num_extra_input_channels=C + 1)


@pytest.fixture(scope="module")
def video():
    return _rand(B, F, S, S, C, seed=2)


def _per_frame(unet, video, **inputs):
    return np.stack(
        [to_numpy(unet({"latents": video[:, f], "timesteps": T, **inputs})) for f in range(video.shape[1])], axis=1
    )


def test_unet2d_shapes_config_and_zero_output_at_init(unet_2d, video):
    out = to_numpy(unet_2d({"latents": video[:, 0], "timesteps": T, "class_labels": LABELS}))
    assert out.shape == (B, S, S, C) and np.isfinite(out).all() and np.abs(out).max() > 1e-3
    config = unet_2d.get_config()
    clone = UNet2D.from_config(config)
    assert clone.get_config() == config
    assert not to_numpy(clone({"latents": video[:, 0], "timesteps": T, "class_labels": LABELS})).any()
    clone.set_weights(unet_2d.get_weights())
    np.testing.assert_allclose(
        to_numpy(clone({"latents": video[:, 0], "timesteps": T, "class_labels": LABELS})), out, atol=1e-6
    )
    assert unet_2d.latent_shape == (S, S, C) and not unet_2d.is_video
    assert UNet2D(learn_sigma=True, **SMALL).out_channels == 2 * C


def test_unet2d_text_conditioning_cross_attends_and_ignores_padding(video):
    unet = UNet2D(conditioning="text", text_dim=6, embedding_mode="add", **SMALL)
    _randomise(unet, seed=3)
    text, mask = _rand(B, 4, 6, seed=4), np.array([[1, 1, 0, 0], [0, 0, 0, 0]], "float32")
    inputs = {"latents": video[:, 0], "timesteps": T, "text_embeddings": text, "text_mask": mask,
              "pooled_text": _rand(B, 6, seed=5)}
    out = to_numpy(unet(inputs))
    assert out.shape == (B, S, S, C) and np.isfinite(out).all()
    padded = dict(inputs, text_embeddings=np.where(mask[..., None] > 0, text, 50.0).astype("float32"))
    np.testing.assert_allclose(to_numpy(unet(padded)), out, atol=1e-5)
    other = text.copy()
    other[0, 0] += 1.0
    assert np.abs(to_numpy(unet(dict(inputs, text_embeddings=other)))[0] - out[0]).max() > 1e-5
    assert UNet2D.from_config(unet.get_config()).get_config() == unet.get_config()


@pytest.mark.parametrize("conv_type", ["pseudo3d", "spatial"])
def test_inflated_unet_is_the_2d_unet_on_every_frame(unet_2d, video_unet, video, conv_type):
    extra = C + 1
    if conv_type == "spatial":  # VDM-style 1x3x3 convolutions, Video-LDM learned mix in the temporal attention
        video_unet = inflate_unet(unet_2d, num_frames=F, conv_type=conv_type, fps_conditioning=True,
                                  learned_mix=True, num_extra_input_channels=extra)
    assert isinstance(video_unet, MakeAVideoUNet) and video_unet.latent_shape == (F, S, S, C)
    expected = _per_frame(unet_2d, video, class_labels=LABELS)
    condition = _rand(B, F, S, S, extra, seed=6)
    out = to_numpy(video_unet({"latents": np.concatenate([video, condition], -1), "timesteps": T,
                               "class_labels": LABELS, "fps": np.array([4.0, 12.0], "float32")}))
    np.testing.assert_allclose(out, expected, atol=IDENTITY_TOL)
    assert np.abs(expected).max() > 0.1  # not a trivially zero comparison
    # every weight was copied or is new: the video model has more, never different, 2D weights
    assert video_unet.count_params() > unet_2d.count_params()
    config = video_unet.get_config()
    assert MakeAVideoUNet.from_config(config).get_config() == config


def test_vdm_unet_temporal_mask_makes_frames_independent(video):
    unet = VDMUNet(num_frames=F, conv_type="pseudo3d", temporal_attention_resolutions=(4,), **SMALL)
    _randomise(unet, seed=7)
    changed = video.copy()
    changed[:, 1] += _rand(B, S, S, C, seed=8)
    mask = np.array([1.0, 0.0], "float32")
    run = lambda v: to_numpy(unet({"latents": v, "timesteps": T, "temporal_mask": mask}))  # noqa: E731
    effect = np.abs(run(changed) - run(video)).max(axis=(2, 3, 4))  # (B, F)
    assert effect[0, [0, 2]].min() > 1e-4, "frames of a video (mask 1) influence each other"
    assert effect[1, [0, 2]].max() < 1e-6, "frames of an image batch (mask 0) do not"
    clone = VDMUNet.from_config(unet.get_config())
    clone.set_weights(unet.get_weights())
    np.testing.assert_allclose(
        to_numpy(clone({"latents": video, "timesteps": T, "temporal_mask": mask})), run(video), atol=1e-6
    )
    # leaving the optional temporal mask out means "all frames interact"
    np.testing.assert_allclose(
        to_numpy(unet({"latents": video, "timesteps": T})),
        to_numpy(unet({"latents": video, "timesteps": T, "temporal_mask": np.ones(B, "float32")})),
        atol=1e-6,
    )


def test_freeze_spatial_leaves_only_the_temporal_layers_trainable(unet_2d):
    """The fit step with frozen spatial weights is in test_diffusion_frame_conditioning (one compile)."""
    video_unet = inflate_unet(unet_2d, num_frames=F, fps_conditioning=True, num_extra_input_channels=C + 1,
                              freeze_spatial=True)
    trainable = {w.path for w in video_unet.trainable_weights}
    added = ("tattn", "/temporal/", "condition_in/", "/fps/")  # names of what inflation inserts
    new = {w.path for w in video_unet.weights if any(part in w.path for part in added)}
    assert trainable == new, "exactly the layers the inflation added train"
    for part in added:
        assert any(part in path for path in new), part
    assert len(video_unet.weights) - len(new) == len(unet_2d.weights)  # the rest is the 2D model
    video_unet.freeze_spatial(False)
    assert len(video_unet.trainable_weights) == len(video_unet.weights)


def test_bad_arguments_are_named(unet_2d):
    with pytest.raises(ValueError, match="image_size"):
        UNet2D(**dict(SMALL, image_size=6, dim_mults=(1, 2, 2)))
    with pytest.raises(ValueError, match="conditioning"):
        UNet2D(conditioning="audio", **SMALL)
    with pytest.raises(ValueError, match="text_dim"):
        UNet2D(conditioning="text", **SMALL)
    vdm, _ = run_backbone_test(VDMUNet, dict(SMALL, num_frames=F, temporal_attention_resolutions="all"),
                               expected_output_shape=(B, F, S, S, C))
    assert vdm.get_config()["temporal_attention_resolutions"] == "all"
    with pytest.raises(ValueError, match="temporal_attention_resolutions"):
        VDMUNet(num_frames=F, temporal_attention_resolutions="some", **SMALL)
    with pytest.raises(TypeError, match="UNet2D"):
        inflate_unet(VDMUNet(num_frames=F, **SMALL))


def test_preset_round_trip_and_registered_presets(tmp_path):
    model = MakeAVideoUNet(**dict(SMALL, num_frames=F, conditioning="class", num_classes=3, fps_conditioning=True))
    run_model_saving_test(model, tmp_path)
    run_preset_test(UNet2D, ["unet2d_tiny", "unet2d_ddpm_cifar"])
    run_preset_test(VDMUNet, ["vdm_unet_tiny", "vdm_unet_small"])
    run_preset_test(MakeAVideoUNet, ["make_a_video_tiny", "make_a_video_small"])
