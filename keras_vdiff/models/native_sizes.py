"""Native sizes: one backbone's weights at any frame count and any height / width (Sora, seed 004 §5.3).

A transformer's weights do not depend on how many tokens it sees; only its
positions do. A family whose positions are computed for the shape (sin-cos
tables, RoPE angles: Latte, VideoDiT, GenTron, DiT) sets ``native_sizes = True``
and writes its graph as ``_forward(inputs, latent_shape)``. ``graph_at`` calls
that method on fresh ``keras.Input`` s of another shape: a functional model of the
*same layer objects*, so every weight is shared (training it trains the
backbone), built once per shape and cached on the backbone (untracked, so presets
and weight files are unchanged). At the training shape the backbone itself runs,
so existing outputs stay exactly as they were.

``VideoBackbone.__call__`` picks the graph from the static shape of ``latents``.
A TensorFlow graph of batches of several shapes (``fit`` on bucketed batches)
has no static height / width: there the call branches on the runtime shape
over every shape prepared with ``at_shape`` (``call_by_runtime_shape``), which
``VideoDiffusion.fit`` does for the shapes of bucketed batches.
"""

import keras

from keras_vdiff.validation import check_int

# `graph_for`'s answer for a TensorFlow tensor whose frame / height / width sizes are unknown until run time.
UNKNOWN_SIZE = object()


def checked_shape(backbone, latent_shape):
    """``latent_shape`` completed with the backbone's channels and checked against its patch and tubelet."""
    trained = tuple(backbone.latent_shape)
    shape = tuple(latent_shape) if isinstance(latent_shape, (tuple, list)) else (latent_shape,)
    if len(shape) == len(trained) - 1:
        shape = shape + (trained[-1],)
    if len(shape) != len(trained):
        axes = "(frames, height, width[, channels])" if len(trained) == 4 else "(height, width[, channels])"
        raise ValueError(f"`latent_shape` must be {axes} for {type(backbone).__name__}, got {latent_shape!r}.")
    for size in shape:
        check_int(size, "latent_shape")
    if shape[-1] != trained[-1]:
        raise ValueError(f"`latent_shape` {shape} has {shape[-1]} channels; the backbone takes {trained[-1]}.")
    if shape == trained:
        return shape
    if not backbone.native_sizes:
        raise ValueError(
            f"{type(backbone).__name__} was built for latents {trained} and cannot run at {shape}: its "
            "positions are fixed at construction (native sizes: Latte, VideoDiT, GenTron, DiT)."
        )
    patch, tubelet = backbone.patch_size, getattr(backbone, "tubelet_size", 1)
    height, width = shape[-3], shape[-2]
    if height % patch or width % patch:
        raise ValueError(
            f"`latent_shape` height / width {(height, width)} must be divisible by `patch_size`={patch}."
        )
    if len(shape) == 4 and shape[0] % tubelet:
        raise ValueError(f"`latent_shape` frames={shape[0]} must be divisible by `tubelet_size`={tubelet}.")
    return shape


def graph_at(backbone, latent_shape):
    """The backbone at ``latent_shape`` (``VideoBackbone.at_shape``): itself at its training shape, else the
    cached functional model of its layers built by its ``_forward``."""
    shape = checked_shape(backbone, latent_shape)
    if shape == tuple(backbone.latent_shape):
        return backbone
    graphs = backbone.__dict__.get("_native_graphs")
    if graphs is None:
        graphs = {}
        object.__setattr__(backbone, "_native_graphs", graphs)  # not tracked: no second copy of the weights
    if shape not in graphs:
        inputs = {
            key: keras.Input(shape=shape if key == "latents" else tuple(spec.shape[1:]), dtype=spec.dtype, name=key)
            for key, spec in backbone.input.items()
        }
        sizes = "x".join(str(size) for size in shape[:-1])
        graphs[shape] = keras.Model(inputs=inputs, outputs=backbone._forward(inputs, shape),
                                    name=f"{backbone.name}_at_{sizes}")
    return graphs[shape]


def prepared_shapes(backbone):
    """The latent shapes the backbone has a graph for: its training shape first, then those of ``at_shape``."""
    return [tuple(backbone.latent_shape)] + list(backbone.__dict__.get("_native_graphs", {}))


def graph_for(backbone, inputs):
    """Which graph runs a call on ``inputs``: the backbone, a native-size graph, or ``UNKNOWN_SIZE``.

    Anything that is not a native-size call (another family, a rank or channel
    count the backbone does not take) returns the backbone, whose input checks
    name the problem.
    """
    latents = inputs.get("latents")
    if not backbone.native_sizes or getattr(latents, "shape", None) is None:
        return backbone
    trained = tuple(backbone.latent_shape)
    shape = tuple(latents.shape)[1:]
    if len(shape) != len(trained) or shape[-1] != trained[-1]:
        return backbone
    sizes = shape[:-1]
    if any(size is None for size in sizes):
        if keras.backend.backend() == "tensorflow" and not isinstance(latents, keras.KerasTensor):
            return UNKNOWN_SIZE
        return backbone
    return graph_at(backbone, tuple(int(size) for size in sizes) + (trained[-1],))


def call_by_runtime_shape(backbone, inputs, call_backbone, args, kwargs):
    """A TensorFlow call whose latent sizes are known only at run time: ``tf.case`` over the prepared shapes.

    Each branch fixes the static shape (``tf.ensure_shape``) and runs that shape's
    graph (``call_backbone`` at the training shape); a shape that was not prepared
    fails with an error naming it and the prepared ones.
    """
    import tensorflow as tf

    latents = inputs["latents"]
    sizes = tf.shape(latents)[1:-1]
    shapes = prepared_shapes(backbone)

    def branch(shape):
        def run():
            fixed = dict(inputs, latents=tf.ensure_shape(latents, (None,) + shape))
            graph = graph_at(backbone, shape)
            return call_backbone(fixed) if graph is backbone else graph(fixed, *args, **kwargs)
        return run

    matches = [tf.reduce_all(tf.equal(sizes, tf.constant(shape[:-1], sizes.dtype))) for shape in shapes]
    check = tf.debugging.Assert(
        tf.reduce_any(tf.stack(matches)),
        [f"{type(backbone).__name__} got latents of a shape it has no graph for; prepared: {shapes}; "
         "call backbone.at_shape(shape) for each shape first. Frame, height, width:", sizes],
    )
    with tf.control_dependencies([check]):
        if len(shapes) == 1:
            return branch(shapes[0])()
        return tf.case([(match, branch(shape)) for match, shape in zip(matches, shapes)], exclusive=True)


def unpatchify_at(unpatchify, grid):
    """``unpatchify`` for a patch grid ``(rows, cols)``: the layer itself at its own grid, else a copy of it
    (a rearrangement without weights) for that grid."""
    if tuple(unpatchify.grid_size) == tuple(grid):
        return unpatchify
    return type(unpatchify).from_config(dict(unpatchify.get_config(), grid_size=tuple(grid)))
