"""Make-A-Video: inflate an image U-Net into a pseudo-3D video U-Net (Singer et al. 2022).

``inflate_unet(unet_2d, num_frames)`` builds a ``MakeAVideoUNet`` of the same
size and loads the image U-Net's weights into it:

- every 3x3 convolution of a residual block becomes a ``PseudoConv3D`` whose
  spatial convolution is the image convolution and whose temporal convolution
  is the identity;
- a temporal attention with zero-initialised output follows every spatial
  attention (pseudo-3D attention);
- an optional fps embedding (zero at the start) is added to the timestep embedding;
- optional extra input channels for masked-frame conditioning (frame
  interpolation, image-to-video) enter through a zero-initialised
  ``condition_in`` convolution added to the image model's ``conv_in``.

So right after inflation the video U-Net computes exactly the image U-Net on
every frame; training then only has to learn the motion. With
``freeze_spatial=True`` (or ``video_unet.freeze_spatial()``) only the new
temporal layers train, as in Make-A-Video's first video stage.
"""

import keras

from keras_vdiff.layers.convolution import PseudoConv3D
from keras_vdiff.models.unet.attention import TemporalAttention
from keras_vdiff.models.unet.blocks import copy_image_weights
from keras_vdiff.models.unet.condition_embedding import UNetConditionEmbedding
from keras_vdiff.models.unet.unet2d import UNet2D
from keras_vdiff.models.unet.vdm_unet import VDMUNet


@keras.saving.register_keras_serializable(package="keras_vdiff")
class MakeAVideoUNet(VDMUNet):
    """Make-A-Video's pseudo-3D U-Net: pseudo-3D convolutions and temporal attention after spatial attention.

    A ``VDMUNet`` with Make-A-Video's defaults: ``conv_type="pseudo3d"`` and
    temporal attention exactly where there is spatial attention
    (``temporal_attention_resolutions=None`` means "the ``attention_resolutions``").
    Usually created by ``inflate_unet`` from a trained ``UNet2D``. All
    arguments as in ``VDMUNet``.

    Example:
        >>> unet = MakeAVideoUNet(image_size=16, num_frames=4, in_channels=3, dim=16, dim_mults=(1, 2),
        ...                       attention_resolutions=(8,), num_heads=2, norm_groups=8, fps_conditioning=True)
        >>> unet({"latents": keras.ops.zeros((2, 4, 16, 16, 3)), "timesteps": keras.ops.array([1.0, 2.0]),
        ...       "fps": keras.ops.array([8.0, 4.0])}).shape
        (2, 4, 16, 16, 3)
    """

    def __init__(self, attention_resolutions=(16, 8), temporal_attention_resolutions=None, conv_type="pseudo3d",
                 **kwargs):
        if temporal_attention_resolutions is None:
            temporal_attention_resolutions = tuple(attention_resolutions or ())
        super().__init__(
            attention_resolutions=attention_resolutions,
            temporal_attention_resolutions=temporal_attention_resolutions,
            conv_type=conv_type,
            **kwargs,
        )

    def temporal_layers(self):
        """The layers an inflation adds to the image U-Net (they train when the spatial weights are frozen).

        Temporal attentions, the temporal convolutions of ``PseudoConv3D``, the
        fps embedding and the ``condition_in`` convolution of masked-frame
        conditioning.
        """
        found = []
        for layer in self._flatten_layers(include_self=False, recursive=True):
            if isinstance(layer, TemporalAttention):
                found.append(layer)
            elif isinstance(layer, PseudoConv3D) and layer.temporal_conv is not None:
                found.append(layer.temporal_conv)
            elif isinstance(layer, UNetConditionEmbedding) and layer.fps_embedding is not None:
                found.append(layer.fps_embedding)
        if "condition_in" in self.unet_layers:
            found.append(self.unet_layers["condition_in"])
        return found

    def freeze_spatial(self, frozen=True):
        """Make every weight inherited from the image U-Net (non-)trainable; the temporal layers stay trainable.

        Call it before ``compile`` (Keras collects the trainable weights there).

        Example:
            >>> video_unet = inflate_unet(unet_2d, num_frames=8).freeze_spatial()
            >>> len(video_unet.trainable_weights) < len(video_unet.weights)
            True
        """
        keep = {id(layer) for layer in self.temporal_layers()}

        def visit(layer):
            children = layer._flatten_layers(include_self=False, recursive=False)
            holds_temporal = any(
                id(sub) in keep for sub in layer._flatten_layers(include_self=False, recursive=True)
            )
            if id(layer) in keep:
                layer.trainable = True
            elif not holds_temporal:
                layer.trainable = not frozen
            else:  # a container of spatial and temporal parts (ResBlock, PseudoConv3D, condition embedding)
                layer.trainable = True
                for child in children:
                    visit(child)

        for layer in self.layers:
            visit(layer)
        return self


def inflate_unet(
    unet_2d,
    num_frames=16,
    conv_type="pseudo3d",
    temporal_attention_resolutions=None,
    relative_position_bias=True,
    learned_mix=False,
    fps_conditioning=False,
    num_extra_input_channels=0,
    freeze_spatial=False,
    **kwargs,
):
    """A video U-Net holding ``unet_2d``'s weights that starts as ``unet_2d`` applied per frame (Make-A-Video).

    Args:
        unet_2d: a built ``UNet2D``.
        num_frames: frames of the video U-Net.
        conv_type: ``"pseudo3d"`` (Make-A-Video) or ``"spatial"`` (temporal attention only).
        temporal_attention_resolutions: None (after every spatial attention), ``"all"`` or sizes.
        relative_position_bias: T5 relative position bias in the temporal attention.
        learned_mix: Video-LDM's learned alpha mix in the temporal attention.
        fps_conditioning: add an ``fps`` input (its embedding starts at zero).
        num_extra_input_channels: extra input channels for masked-frame conditioning
            (``in_channels + 1`` for known-frame latents plus a mask channel).
        freeze_spatial: make the image U-Net's weights non-trainable, so that
            ``fit`` trains only the temporal layers (``MakeAVideoUNet.freeze_spatial``).
        **kwargs: other ``MakeAVideoUNet`` arguments (e.g. ``dropout``, ``name``).

    Returns: a ``MakeAVideoUNet``.

    Example:
        >>> unet = UNet2D(image_size=16, in_channels=3, dim=16, dim_mults=(1, 2), num_heads=2,
        ...               norm_groups=8, attention_resolutions=(8,))
        >>> video_unet = inflate_unet(unet, num_frames=8, fps_conditioning=True)
        >>> video_unet.latent_shape
        (8, 16, 16, 3)
    """
    if not isinstance(unet_2d, UNet2D):
        raise TypeError(f"`unet_2d` must be a keras_vdiff UNet2D, got {type(unet_2d).__name__}.")
    config = unet_2d.get_config()
    for key in ("name", "trainable", "dtype"):
        config.pop(key, None)
    config.update(
        num_frames=num_frames,
        conv_type=conv_type,
        temporal_attention_resolutions=temporal_attention_resolutions,
        relative_position_bias=relative_position_bias,
        learned_mix=learned_mix,
        fps_conditioning=fps_conditioning,
        num_extra_input_channels=num_extra_input_channels,
        **kwargs,
    )
    config.setdefault("dtype", unet_2d.dtype_policy.name)
    video_unet = MakeAVideoUNet(**config)
    for name, source in unet_2d.unet_layers.items():
        copy_image_weights(video_unet.unet_layers[name], source)
    if freeze_spatial:
        video_unet.freeze_spatial()
    return video_unet

