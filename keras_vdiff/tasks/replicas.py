"""Training randomness and the loss under ``tf.distribute`` replicas (MirroredStrategy data parallelism).

Keras runs the TensorFlow train step once per replica on its share of the global
batch. Drawn naively, every replica would draw the *same* timesteps and noise
(the seed generator is mirrored) for different examples, and a loss averaged
per replica would have its gradients summed over replicas. Here each replica
draws for the whole global batch and keeps its own rows (so a mirrored run sees
the numbers one device sees for the same global batch), and the loss is scaled
by ``1 / replicas`` as Keras' own losses are. Elsewhere (one device, JAX's
``keras.distribution``, which is one program over the global batch) both are
the identity. On JAX, ``batch_sharded`` splits ``generate``'s initial latents over
the mesh's batch axis.
"""

import keras


def replica_count_and_index():
    """``(replicas in sync, this replica's index)`` inside a ``tf.distribute`` replica context; else ``(1, 0)``."""
    if keras.backend.backend() != "tensorflow":
        return 1, 0
    import tensorflow as tf

    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return 1, 0
    context = tf.distribute.get_replica_context()
    if context.num_replicas_in_sync == 1:
        return 1, 0
    return context.num_replicas_in_sync, context.replica_id_in_sync_group


def global_batch_draw(draw, batch_size):
    """``draw(n)`` (random rows for ``n`` examples) for this replica's ``batch_size`` examples of the global batch."""
    count, index = replica_count_and_index()
    if count == 1:
        return draw(batch_size)
    return draw(batch_size * count)[index * batch_size:(index + 1) * batch_size]


def replica_uniform(batch_size, seed):
    """Uniform [0, 1) draws for this replica's ``batch_size`` examples (:func:`global_batch_draw`)."""
    return global_batch_draw(lambda n: keras.random.uniform((n,), seed=seed), batch_size)


def scaled_for_replicas(loss):
    """The replica's loss scaled by ``1 / replicas`` (Keras sums the replicas' gradients and unscales the metric)."""
    count, _ = replica_count_and_index()
    return loss if count == 1 else loss / count


def batch_sharded(tensor):
    """``tensor`` split along its first (batch) axis over the active ``keras.distribution`` (JAX).

    ``generate`` puts its initial latents through this, so the compiled sampling loop runs each device on
    its rows of the batch. Without a distribution, on another backend, or when the batch axis of the mesh
    does not divide the batch, the tensor is returned as it is (replicated: every device samples it all).
    """
    if keras.backend.backend() != "jax":
        return tensor
    distribution = keras.distribution.distribution()
    if distribution is None:
        return tensor
    layout = distribution.get_data_layout(tuple(tensor.shape))
    sizes = dict(zip(layout.device_mesh.axis_names, layout.device_mesh.shape))
    if tensor.shape[0] % sizes.get(layout.axes[0], 1):
        return tensor
    return keras.distribution.distribute_tensor(tensor, layout)
