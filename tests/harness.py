"""Shared backbone tests, in the spirit of keras-hub's ``TestCase.run_backbone_test`` / ``run_preset_test`` /
``run_model_saving_test`` (``keras_hub/src/tests/test_case.py``).

Every backbone's test file calls these instead of writing its own copies:

- :func:`run_backbone_test`: build from a config, call on inputs, check the output shape(s), the config
  round trip (``from_config(get_config())`` gives the same config and the same weight shapes);
- :func:`run_model_saving_test`: ``save_to_preset`` / ``from_preset`` gives bit-identical outputs;
- :func:`run_preset_test`: every registered preset of the class names valid constructor arguments and
  the small ones build and run.

Inputs are drawn from the model's own input spec (:func:`random_inputs`), so the same helpers serve
every conditioning (class, text, none) and the family inputs (``previous_latents``, ``fps``, ...).
"""

import keras
import numpy as np

from conftest import to_numpy
from keras_vdiff.presets import registry

TEXT_LENGTH = 5


def random_inputs(model, batch=2, seed=0, text_length=TEXT_LENGTH):
    """A random input dict for ``model``, one array per input of its spec (free axes get ``text_length``).

    ``class_labels`` cover the null class, ``text_mask`` pads the last two tokens, ``timesteps`` lie in
    [0, 999), masks (``temporal_mask``) are ones and everything else is standard normal.
    """
    rng = np.random.default_rng(seed)
    inputs = {}
    for name, spec in model.input.items():
        shape = (batch,) + tuple(text_length if d is None else d for d in spec.shape[1:])
        if name == "class_labels":
            inputs[name] = rng.integers(0, model.num_classes + 1, shape).astype("int32")
        elif name == "timesteps":
            inputs[name] = rng.uniform(0, 999, shape).astype("float32")
        elif name == "text_mask":
            mask = np.ones(shape, "float32")
            mask[:, 3:] = 0.0
            inputs[name] = mask
        elif name == "temporal_mask":
            inputs[name] = np.ones(shape, "float32")
        elif name == "fps":
            inputs[name] = rng.uniform(4, 24, shape).astype("float32")
        else:
            inputs[name] = rng.standard_normal(shape).astype("float32")
    return inputs


def randomise(model, seed=0, scale=0.05):
    """Give every weight random values (fresh backbones output zeros: adaLN-Zero, zero-initialised heads)."""
    rng = np.random.default_rng(seed)
    model.set_weights([scale * rng.standard_normal(w.shape).astype("float32") for w in model.get_weights()])
    return model


def _shapes(outputs):
    if isinstance(outputs, dict):
        return {key: tuple(value.shape) for key, value in outputs.items()}
    return tuple(outputs.shape)


def run_backbone_test(cls, init_kwargs, expected_output_shape, input_data=None):
    """Build ``cls(**init_kwargs)``, call it and check the output shape(s) and the config round trip.

    Args:
        cls: the backbone class.
        init_kwargs: constructor arguments.
        expected_output_shape: the output's shape, or a dict of shapes for dict outputs.
        input_data: the inputs (default: :func:`random_inputs` of the model).

    Returns: the model (built, random weights) and its inputs, for further checks.
    """
    model = cls(**init_kwargs)
    inputs = random_inputs(model) if input_data is None else input_data
    outputs = model(inputs)
    expected = ({k: tuple(v) for k, v in expected_output_shape.items()} if isinstance(expected_output_shape, dict)
                else tuple(expected_output_shape))
    assert _shapes(outputs) == expected, (_shapes(outputs), expected)
    for output in (outputs.values() if isinstance(outputs, dict) else [outputs]):
        assert np.all(np.isfinite(to_numpy(output)))
    config = model.get_config()
    clone = cls.from_config(config)
    assert clone.get_config() == config
    assert [tuple(w.shape) for w in clone.weights] == [tuple(w.shape) for w in model.weights]
    return model, inputs


def run_model_saving_test(model, tmp_path, input_data=None, seed=0, generic_loader=False):
    """``save_to_preset`` then ``from_preset`` gives the same class, config and bit-identical outputs.

    With ``generic_loader`` the preset is also loaded by ``VideoBackbone.from_preset`` (the class is
    read from the preset's ``config.json``).
    """
    from keras_vdiff.models import VideoBackbone

    randomise(model, seed=seed)
    inputs = random_inputs(model) if input_data is None else input_data
    reference = keras.tree.map_structure(to_numpy, model(inputs))
    path = str(tmp_path / type(model).__name__.lower())
    model.save_to_preset(path)
    for loader in (type(model), VideoBackbone) if generic_loader else (type(model),):
        restored = loader.from_preset(path)
        assert type(restored) is type(model) and restored.get_config() == model.get_config()
        outputs = keras.tree.map_structure(to_numpy, restored(inputs))
        keras.tree.map_structure(np.testing.assert_array_equal, outputs, reference)
    return restored


def run_preset_test(cls, expected_names, build=()):
    """The registered presets of ``cls``: the expected names exist, every config takes only ``cls``'s
    constructor arguments, and the presets in ``build`` build by name and run.

    Returns: the built models, by name.
    """
    names = registry.list_presets(class_name=cls.__name__)
    missing = sorted(set(expected_names) - set(names))
    assert not missing, f"presets not registered for {cls.__name__}: {missing}"
    valid = set(cls.constructor_arguments())
    for name in names:
        record = registry.get_preset(name)
        assert record["kind"] == "backbone" and record["description"], name
        unknown = set(record["config"]) - valid
        assert not unknown, f"preset {name!r} passes unknown arguments {sorted(unknown)}"
    built = {}
    for name in build:
        model = cls.from_preset(name)
        assert isinstance(model, cls)
        outputs = model(random_inputs(model))
        latents = outputs["output"] if isinstance(outputs, dict) else outputs
        assert tuple(latents.shape)[1:-1] == tuple(model.latent_shape)[:-1]
        assert latents.shape[-1] == model.out_channels
        built[name] = model
    return built
