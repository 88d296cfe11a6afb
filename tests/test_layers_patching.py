import keras
import numpy as np
import pytest

from keras_vdiff.layers import PatchEmbedding, Unpatchify, patchify
from conftest import to_numpy


def _identity_embedding(patch_size, channels, tubelet_size=1):
    dim = tubelet_size * patch_size * patch_size * channels
    layer = PatchEmbedding(patch_size=patch_size, hidden_dim=dim, tubelet_size=tubelet_size, use_bias=False)
    return layer, dim


@pytest.mark.parametrize("tubelet_size", [1, 2])
def test_video_patchify_unpatchify_round_trip_is_exact(tubelet_size):
    x = np.random.randn(2, 4, 8, 12, 3).astype("float32")
    embed, dim = _identity_embedding(2, 3, tubelet_size)
    embed.build(x.shape)
    embed.projection.kernel.assign(np.eye(dim, dtype="float32"))
    tokens = embed(x)
    assert tuple(tokens.shape) == (2, 4 // tubelet_size, 4 * 6, dim)
    back = Unpatchify(patch_size=2, out_channels=3, tubelet_size=tubelet_size, grid_size=(4, 6))(tokens)
    np.testing.assert_array_equal(to_numpy(back), x)


def test_image_round_trip_and_square_grid_inference():
    x = np.random.randn(3, 8, 8, 2).astype("float32")
    embed, dim = _identity_embedding(4, 2)
    embed.build(x.shape)
    embed.projection.kernel.assign(np.eye(dim, dtype="float32"))
    tokens = embed(x)
    assert tuple(tokens.shape) == (3, 4, dim)
    np.testing.assert_array_equal(to_numpy(Unpatchify(patch_size=4, out_channels=2)(tokens)), x)


def test_patch_layout_matches_numpy_reference():
    # Independent reference: token (f, i, j) holds x[f*pt:(f+1)*pt, i*p:(i+1)*p, j*p:(j+1)*p, :] flattened.
    x = np.random.randn(1, 4, 4, 6, 2).astype("float32")
    p, pt = 2, 2
    got = to_numpy(patchify(keras.ops.convert_to_tensor(x), p, pt))
    for f in range(2):
        for i in range(2):
            for j in range(3):
                ref = x[0, f * pt:(f + 1) * pt, i * p:(i + 1) * p, j * p:(j + 1) * p, :].reshape(-1)
                np.testing.assert_array_equal(got[0, f, i * 3 + j], ref)


def test_patch_embedding_equals_strided_convolution():
    # The Dense over flattened patches must equal a Conv2D with kernel = stride = patch.
    x = np.random.randn(2, 8, 8, 3).astype("float32")
    embed = PatchEmbedding(patch_size=2, hidden_dim=5)
    tokens = to_numpy(embed(x))
    kernel = to_numpy(embed.projection.kernel).reshape(2, 2, 3, 5)
    bias = to_numpy(embed.projection.bias)
    ref = np.einsum("bhpwqc,pqcd->bhwd", x.reshape(2, 4, 2, 4, 2, 3), kernel) + bias
    np.testing.assert_allclose(tokens, ref.reshape(2, 16, 5), atol=1e-5)


def test_bad_sizes_raise_clear_errors():
    with pytest.raises(ValueError, match="patch_size"):
        PatchEmbedding(patch_size=3, hidden_dim=8)(np.zeros((1, 8, 8, 1), "float32"))
    with pytest.raises(ValueError, match="tubelet_size"):
        PatchEmbedding(patch_size=2, hidden_dim=8, tubelet_size=3)(np.zeros((1, 4, 8, 8, 1), "float32"))
    with pytest.raises(ValueError, match="patch_size"):
        PatchEmbedding(patch_size=0, hidden_dim=8)
    with pytest.raises(ValueError, match="square"):
        Unpatchify(patch_size=2, out_channels=1)(np.zeros((1, 6, 4), "float32"))


def test_serialization_round_trip():
    for layer in (PatchEmbedding(patch_size=2, hidden_dim=16, tubelet_size=2),
                  Unpatchify(patch_size=2, out_channels=3, grid_size=(2, 4))):
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert type(restored) is type(layer)
        assert restored.get_config() == layer.get_config()
