"""What every diffusion process offers the task model and the samplers.

A process turns clean data into a training example (``sample_timesteps``,
``add_noise``, ``model_timesteps``, ``compute_loss``) and describes its reverse
path for the samplers through ``sampling_grid`` and ``split_prediction``.

Every point of a path is written ``x = alpha * x0 + sigma * eps``: Gaussian
diffusion has ``alpha = sqrt(abar)``, ``sigma = sqrt(1 - abar)``; the flow path
has ``alpha = 1 - t``, ``sigma = t``. Samplers only use these two numbers per
step, so one sampler serves both processes.
"""

from keras import ops

# The timestep grids of a sampling run (``gaussian.spaced_timesteps`` says which diffusers scheduler uses each).
TIMESTEP_SPACINGS = (
    "leading", "linspace", "trailing", "linspace_to_zero", "fractional_linspace", "leading_skip_zero"
)


def per_example_mean(x):
    """Mean over every axis but the first: (B, ...) -> (B,)."""
    return ops.mean(ops.reshape(x, (ops.shape(x)[0], -1)), axis=-1)


def gather_per_example(table, t, ndim):
    """``table[t]`` as float32 shaped (B, 1, ..., 1) to broadcast against a rank-``ndim`` tensor."""
    values = ops.take(ops.convert_to_tensor(table, dtype="float32"), t)
    return ops.reshape(values, (-1,) + (1,) * (ndim - 1))


class DiffusionProcess:
    """Base class of ``GaussianDiffusion`` and ``FlowMatching`` (shared plumbing).

    Subclasses set ``learn_sigma`` and ``prediction`` and implement the
    training methods and ``sampling_grid`` / ``split_prediction``.
    """

    learn_sigma = False
    prediction = "epsilon"
    default_sampler = "ddim"

    def split_output(self, model_output):
        """(prediction, variance values or None) from the backbone output (cast to float32)."""
        model_output = ops.cast(model_output, "float32")
        if not self.learn_sigma:
            return model_output, None
        channels = ops.shape(model_output)[-1] // 2
        return model_output[..., :channels], model_output[..., channels:]

    def prediction_channels(self, out_channels):
        """How many leading output channels are the prediction (the rest: variance values)."""
        return out_channels // 2 if self.learn_sigma else out_channels

    @classmethod
    def from_config(cls, config):
        return cls(**config)
