"""Inflated Inception-V1 (I3D), the feature network behind FVD, in Keras.

Carreira & Zisserman, 2017, "Quo Vadis, Action Recognition? A New Model and
the Kinetics Dataset", inflate the 2D Inception-V1 (GoogLeNet) into 3D:
every convolution gains a temporal extent, every Inception block keeps its
four branches (1x1x1; 1x1x1 -> 3x3x3; 1x1x1 -> 3x3x3; 3x3x3 max-pool ->
1x1x1). Unterthiner et al., 2018 ("Towards Accurate Generative Models of
Video") use the Kinetics-400 RGB network's 400 logits as the features of the
Frechet Video Distance.

This module only defines the architecture (channels-last, any static input
size) and loaders for weights a user already has; nothing is downloaded.
Because the network is fully convolutional up to a global pool, the same
weights serve any ``video_shape``: build the model for the frames and size you
evaluate (e.g. ``(16, 224, 224, 3)`` as in FVD, or ``(10, 224, 224, 3)`` for
MovingMNIST after resizing).
"""

import os

import keras
import numpy as np

__all__ = ["I3D", "I3D_STAGES", "pytorch_i3d_weight_names"]

# Stages after the stem, in order: Inception blocks with their output channels
# (branch0, branch1 reduce, branch1, branch2 reduce, branch2, branch3 after the
# pool), from the paper's Inception-V1, and max-pools with (pool size, strides).
I3D_STAGES = (
    ("Mixed_3b", (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
    ("MaxPool3d_4a_3x3", ((3, 3, 3), (2, 2, 2))),
    ("Mixed_4b", (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", (256, 160, 320, 32, 128, 128)),
    ("MaxPool3d_5a_2x2", ((2, 2, 2), (2, 2, 2))),
    ("Mixed_5b", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", (384, 192, 384, 48, 128, 128)),
)

# Branch unit names inside an Inception block (the pytorch-i3d naming).
_BRANCH_UNITS = (("b0", 0, 1), ("b1a", 1, 1), ("b1b", 2, 3), ("b2a", 3, 1), ("b2b", 4, 3), ("b3b", 5, 1))
_STEM_UNITS = ("Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3")


def _unit(x, filters, kernel_size, strides, name, initializer):
    """Conv3D (no bias, TF 'same' padding) -> BatchNorm (eps 1e-3) -> ReLU."""
    x = keras.layers.Conv3D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer=initializer,
        name=f"{name}_conv",
    )(x)
    x = keras.layers.BatchNormalization(epsilon=1e-3, momentum=0.99, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _inception_block(x, channels, name, initializer):
    branch0 = _unit(x, channels[0], 1, 1, f"{name}_b0", initializer)
    branch1 = _unit(x, channels[1], 1, 1, f"{name}_b1a", initializer)
    branch1 = _unit(branch1, channels[2], 3, 1, f"{name}_b1b", initializer)
    branch2 = _unit(x, channels[3], 1, 1, f"{name}_b2a", initializer)
    branch2 = _unit(branch2, channels[4], 3, 1, f"{name}_b2b", initializer)
    branch3 = keras.layers.MaxPooling3D(3, strides=1, padding="same", name=f"{name}_b3a_pool")(x)
    branch3 = _unit(branch3, channels[5], 1, 1, f"{name}_b3b", initializer)
    return keras.layers.Concatenate(axis=-1, name=name)([branch0, branch1, branch2, branch3])


def _scaled(channels, width_multiplier):
    return max(1, int(round(channels * width_multiplier)))


@keras.saving.register_keras_serializable(package="keras_vdiff")
class I3D(keras.Model):
    """Inception-3D video classifier / feature extractor (channels-last).

    Inputs are videos ``(batch, frames, height, width, 3)`` scaled to
    ``[-1, 1]`` (use :meth:`preprocess` or :meth:`features` for uint8
    videos). Outputs are a dict: ``"logits"`` ``(batch, num_classes)`` and
    ``"pooled"`` ``(batch, 1024 * width_multiplier)``, the globally pooled
    Mixed_5c features the logits are a linear function of.

    The end of the network follows the reference: a ``[2, 7, 7]`` average
    pool with stride 1 over the Mixed_5c map (clipped to the map's size for
    small inputs), then the mean over the remaining positions, then a linear
    layer to the logits (the reference's 1x1x1 convolution, which commutes
    with the mean).

    Args:
        num_classes: size of the logits (400 for Kinetics-400).
        video_shape: static input shape ``(frames, height, width, channels)``;
            ``(16, 224, 224, 3)`` by default. Weights do not depend on it.
        width_multiplier: scales every convolution's channel count (1.0 is the
            published network; small values make fast test models that cannot
            load published weights).
        dropout_rate: dropout before the logits (training only).
        kernel_initializer: initializer of the convolution and logits
            kernels. Irrelevant when weights are loaded; ``"zeros"`` skips the
            random initialisation, which on JAX compiles one random kernel
            per weight shape (tens of seconds on a small CPU).

    Weights: :meth:`load_weights` takes
      - a Keras ``.weights.h5`` file saved from this class
        (``I3D().save_weights("i3d_kinetics400_rgb.weights.h5")``), or
      - a PyTorch state dict in the naming of the widely used ``pytorch-i3d``
        port of the DeepMind RGB checkpoints (``rgb_imagenet.pt``,
        ``rgb_charades.pt``), as a ``.pt``/``.pth`` file (needs ``torch``) or
        an ``.npz`` with the same keys, e.g. ``Conv3d_1a_7x7.conv3d.weight``,
        ``Mixed_3b.b1b.bn.running_var``, ``logits.conv3d.bias``.
        :func:`pytorch_i3d_weight_names` lists the expected keys.

    Example:
    >>> model = I3D(video_shape=(16, 224, 224, 3))
    >>> model.load_weights("rgb_imagenet.pt")   # a file you have
    >>> features = model.features(uint8_videos)  # (N, 400) logits for FVD

    Paper: Carreira & Zisserman, 2017, "Quo Vadis, Action Recognition?".
    """

    def __init__(
        self,
        num_classes=400,
        video_shape=(16, 224, 224, 3),
        width_multiplier=1.0,
        dropout_rate=0.0,
        kernel_initializer="glorot_uniform",
        name="i3d",
        **kwargs,
    ):
        video_shape = tuple(video_shape)
        if len(video_shape) != 4 or not all(isinstance(d, (int, np.integer)) and d > 0 for d in video_shape):
            raise ValueError(
                "`video_shape` must be four positive ints (frames, height, width, channels); "
                f"received {video_shape!r}."
            )
        if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(f"`num_classes` must be a positive integer; received {num_classes!r}.")
        if not width_multiplier > 0:
            raise ValueError(f"`width_multiplier` must be positive; received {width_multiplier!r}.")
        if not 0.0 <= dropout_rate < 1.0:
            raise ValueError(f"`dropout_rate` must be in [0, 1); received {dropout_rate!r}.")

        def width(channels):
            return _scaled(channels, width_multiplier)

        # A config (not an instance) so every layer deserialises its own initializer.
        init = keras.initializers.serialize(keras.initializers.get(kernel_initializer))
        videos = keras.Input(shape=video_shape, name="videos")
        x = _unit(videos, width(64), 7, 2, "Conv3d_1a_7x7", init)
        x = keras.layers.MaxPooling3D((1, 3, 3), strides=(1, 2, 2), padding="same", name="MaxPool3d_2a_3x3")(x)
        x = _unit(x, width(64), 1, 1, "Conv3d_2b_1x1", init)
        x = _unit(x, width(192), 3, 1, "Conv3d_2c_3x3", init)
        x = keras.layers.MaxPooling3D((1, 3, 3), strides=(1, 2, 2), padding="same", name="MaxPool3d_3a_3x3")(x)
        for block_name, spec in I3D_STAGES:
            if block_name.startswith("MaxPool"):
                pool_size, strides = spec
                x = keras.layers.MaxPooling3D(pool_size, strides=strides, padding="same", name=block_name)(x)
            else:
                x = _inception_block(x, [width(c) for c in spec], block_name, init)
        frames, height, width_, _ = x.shape[1:]
        pool_size = (min(2, frames), min(7, height), min(7, width_))
        x = keras.layers.AveragePooling3D(pool_size, strides=1, padding="valid", name="Logits_avg_pool")(x)
        pooled = keras.layers.GlobalAveragePooling3D(name="pooled")(x)
        dropped = keras.layers.Dropout(dropout_rate, name="Logits_dropout")(pooled)
        logits = keras.layers.Dense(num_classes, kernel_initializer=init, name="logits")(dropped)
        super().__init__(inputs=videos, outputs={"logits": logits, "pooled": pooled}, name=name, **kwargs)

        self.num_classes = int(num_classes)
        self.video_shape = tuple(int(d) for d in video_shape)
        self.width_multiplier = width_multiplier
        self.dropout_rate = dropout_rate
        self.kernel_initializer = init

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "num_classes": self.num_classes,
            "video_shape": self.video_shape,
            "width_multiplier": self.width_multiplier,
            "dropout_rate": self.dropout_rate,
            "kernel_initializer": self.kernel_initializer,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def preprocess(self, videos):
        """uint8/float videos in ``[0, 255]`` -> float32 ``[-1, 1]`` at the model's size.

        Grey videos (1 channel) are repeated to RGB; frames are resized
        bilinearly to the model's ``(height, width)`` as in FVD. The number of
        frames must already match ``video_shape[0]``.
        """
        videos = np.asarray(videos)
        frames, height, width, channels = self.video_shape
        if videos.ndim != 5:
            raise ValueError(f"`videos` must have shape (N, F, H, W, C); received {videos.shape}.")
        if videos.shape[1] != frames:
            raise ValueError(
                f"`videos` has {videos.shape[1]} frames but this I3D was built for {frames}; "
                f"build it with `video_shape=({videos.shape[1]}, {height}, {width}, {channels})` "
                "(the weights do not depend on it)."
            )
        if videos.shape[-1] == 1 and channels == 3:
            videos = np.repeat(videos, 3, axis=-1)
        if videos.shape[-1] != channels:
            raise ValueError(
                f"`videos` has {videos.shape[-1]} channels; expected {channels} (or 1, repeated)."
            )
        videos = videos.astype(np.float32)
        if videos.size and (videos.min() < 0.0 or videos.max() > 255.0):
            raise ValueError(
                f"`videos` must lie in [0, 255]; received values in [{videos.min():g}, {videos.max():g}]."
            )
        num_videos = videos.shape[0]
        if videos.shape[2:4] != (height, width):
            flat = videos.reshape((-1,) + videos.shape[2:])
            flat = keras.ops.convert_to_numpy(
                keras.ops.image.resize(flat, (height, width), interpolation="bilinear", antialias=False)
            )
            videos = flat.reshape((num_videos, frames, height, width, channels))
        return videos / 127.5 - 1.0

    def features(self, videos, output="logits", batch_size=8):
        """Features of uint8 videos in ``[0, 255]`` as a numpy ``(N, D)`` array.

        Args:
            videos: ``(N, F, H, W, C)`` videos, ``F`` equal to ``video_shape[0]``.
            output: ``"logits"`` (the FVD features of Unterthiner et al.) or
                ``"pooled"`` (the 1024-d Mixed_5c features).
            batch_size: videos per forward pass.
        """
        if output not in ("logits", "pooled"):
            raise ValueError(f"`output` must be 'logits' or 'pooled'; received {output!r}.")
        videos = np.asarray(videos)
        results = []
        for start in range(0, videos.shape[0], batch_size):
            batch = self.preprocess(videos[start : start + batch_size])
            outputs = self.predict_on_batch(batch)
            results.append(np.asarray(outputs[output], dtype=np.float64))
        return np.concatenate(results, axis=0)

    def load_weights(self, filepath, skip_mismatch=False, **kwargs):
        """Loads a ``.weights.h5`` file, or a pytorch-i3d state dict (``.pt``/``.pth``/``.npz``)."""
        path = os.fspath(filepath)
        if path.endswith((".pt", ".pth")):
            import torch

            state = torch.load(path, map_location="cpu", weights_only=True)
            state = {key: value.detach().cpu().numpy() for key, value in state.items()}
            return self.load_pytorch_state_dict(state)
        if path.endswith(".npz"):
            with np.load(path) as data:
                return self.load_pytorch_state_dict({key: data[key] for key in data.files})
        return super().load_weights(path, skip_mismatch=skip_mismatch, **kwargs)

    def load_pytorch_state_dict(self, state_dict):
        """Sets weights from a dict of numpy arrays named as in pytorch-i3d.

        Convolution kernels ``(out, in, t, h, w)`` become ``(t, h, w, in, out)``;
        the 1x1x1 logits convolution becomes the Dense kernel. Keys with a
        ``module.`` prefix (DataParallel) are accepted. Every expected key must
        be present with the right shape.
        """
        state = {key[len("module.") :] if key.startswith("module.") else key: value for key, value in state_dict.items()}
        missing = [key for key in pytorch_i3d_weight_names() if key not in state]
        if missing:
            raise ValueError(
                f"The state dict lacks {len(missing)} I3D weights, e.g. {missing[:3]}; expected the "
                "pytorch-i3d naming (see `pytorch_i3d_weight_names()`)."
            )
        for torch_unit, keras_unit in _unit_name_pairs():
            conv = self.get_layer(f"{keras_unit}_conv")
            bn = self.get_layer(f"{keras_unit}_bn")
            kernel = np.transpose(np.asarray(state[f"{torch_unit}.conv3d.weight"]), (2, 3, 4, 1, 0))
            _assign(conv.kernel, kernel, f"{torch_unit}.conv3d.weight")
            for torch_name, variable in (
                ("weight", bn.gamma),
                ("bias", bn.beta),
                ("running_mean", bn.moving_mean),
                ("running_var", bn.moving_variance),
            ):
                _assign(variable, state[f"{torch_unit}.bn.{torch_name}"], f"{torch_unit}.bn.{torch_name}")
        dense = self.get_layer("logits")
        kernel = np.asarray(state["logits.conv3d.weight"])
        _assign(dense.kernel, kernel.reshape(kernel.shape[0], kernel.shape[1]).T, "logits.conv3d.weight")
        _assign(dense.bias, state["logits.conv3d.bias"], "logits.conv3d.bias")

    def pytorch_state_dict(self):
        """The model's weights as numpy arrays in pytorch-i3d naming (inverse of loading)."""
        state = {}
        for torch_unit, keras_unit in _unit_name_pairs():
            conv = self.get_layer(f"{keras_unit}_conv")
            bn = self.get_layer(f"{keras_unit}_bn")
            state[f"{torch_unit}.conv3d.weight"] = np.transpose(
                keras.ops.convert_to_numpy(conv.kernel), (4, 3, 0, 1, 2)
            )
            for torch_name, variable in (
                ("weight", bn.gamma),
                ("bias", bn.beta),
                ("running_mean", bn.moving_mean),
                ("running_var", bn.moving_variance),
            ):
                state[f"{torch_unit}.bn.{torch_name}"] = keras.ops.convert_to_numpy(variable)
        dense = self.get_layer("logits")
        kernel = keras.ops.convert_to_numpy(dense.kernel)
        state["logits.conv3d.weight"] = kernel.T.reshape(kernel.shape[1], kernel.shape[0], 1, 1, 1)
        state["logits.conv3d.bias"] = keras.ops.convert_to_numpy(dense.bias)
        return state


def _unit_name_pairs():
    """(pytorch-i3d unit prefix, Keras unit prefix) for every conv+BN unit, in order."""
    pairs = [(name, name) for name in _STEM_UNITS]
    for block_name, spec in I3D_STAGES:
        if block_name.startswith("Mixed"):
            pairs.extend((f"{block_name}.{unit}", f"{block_name}_{unit}") for unit, _, _ in _BRANCH_UNITS)
    return pairs


def pytorch_i3d_weight_names():
    """Every key :meth:`I3D.load_pytorch_state_dict` expects (57 conv+BN units x 5 + 2 = 287)."""
    names = []
    for torch_unit, _ in _unit_name_pairs():
        names.append(f"{torch_unit}.conv3d.weight")
        names.extend(f"{torch_unit}.bn.{n}" for n in ("weight", "bias", "running_mean", "running_var"))
    names.extend(["logits.conv3d.weight", "logits.conv3d.bias"])
    return names


def _assign(variable, value, name):
    value = np.asarray(value, dtype="float32")
    if tuple(variable.shape) != value.shape:
        raise ValueError(
            f"Weight {name!r} has shape {value.shape}; the model expects {tuple(variable.shape)}. "
            "Published weights need `width_multiplier=1.0` and the matching `num_classes`."
        )
    variable.assign(value)
