"""Argument checks shared by every floor of keras_vdiff (the lowest floor: imports only numpy).

Each check raises a ``ValueError`` that names the argument, repeats the value and
says what is valid, and returns the value in its canonical form (a Python ``int``,
a tuple), so callers write ``self.dim = check_int(dim, "dim")``.

Example:
    >>> check_int(4, "num_heads")
    4
    >>> check_pair(8, "image_size")
    (8, 8)
"""

import numpy as np


def is_int(value):
    """True for Python and numpy integers, False for booleans and everything else."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_int(value, name, minimum=1):
    """``value`` as an ``int`` if it is an integer ``>= minimum`` (default: a positive integer).

    Args:
        value: the argument to check.
        name: the argument's name, used in the error message.
        minimum: the smallest valid value (0 for "non-negative").
    """
    if not is_int(value) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"`{name}` must be {what}, got {value!r}.")
    return int(value)


def check_optional_int(value, name, minimum=1):
    """``None`` or :func:`check_int` of ``value``."""
    return None if value is None else check_int(value, name, minimum=minimum)


def check_pair(value, name):
    """A positive int or a pair of positive ints as a ``(height, width)`` tuple of ints."""
    if is_int(value):
        value = (value, value)
    try:
        pair = tuple(value)
    except TypeError:
        pair = ()
    if len(pair) != 2 or not all(is_int(v) and v > 0 for v in pair):
        raise ValueError(f"`{name}` must be a positive int or a pair of positive ints, got {value!r}.")
    return tuple(int(v) for v in pair)


def check_divisible(value, name, divisor, divisor_name):
    """``value`` if ``divisor`` divides it (e.g. a width split into attention heads)."""
    if value % divisor:
        raise ValueError(f"`{name}`={value} must be divisible by `{divisor_name}`={divisor}.")
    return value


def check_bool(value, name):
    """``value`` if it is ``True`` or ``False`` (not 0 / 1 or a string)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{name}` must be True or False, got {value!r}.")
    return bool(value)


def check_one_of(value, name, choices):
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {tuple(choices)}, got {value!r}.")
    return value


# What Keras' models take besides a family's own arguments.
MODEL_KEYWORDS = ("name", "trainable", "dtype")


def constructor_arguments(cls, base):
    """The keyword arguments ``cls(...)`` accepts: the parameters of each ``__init__`` from ``cls`` up to
    (not including) ``base`` that its ``**kwargs`` forward to, then ``MODEL_KEYWORDS``."""
    import inspect

    names = []
    for klass in cls.__mro__:
        if klass is base:
            break
        if "__init__" not in vars(klass):
            continue
        parameters = inspect.signature(vars(klass)["__init__"]).parameters.values()
        names += [p.name for p in parameters if p.name != "self" and p.name not in names
                  and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            break
    return names + [name for name in MODEL_KEYWORDS if name not in names]


def check_keywords(cls, kwargs, base, allowed=()):
    """Raise a ``TypeError`` naming the keywords of ``kwargs`` that ``cls(...)`` does not take, and the valid ones.

    Keras' functional models ignore unknown keywords, so a typo such as
    ``Latte(hidden_dimm=64)`` would otherwise build the default silently.
    """
    valid = constructor_arguments(cls, base)
    unknown = sorted(set(kwargs) - set(valid) - set(allowed))
    if unknown:
        raise TypeError(
            f"{cls.__name__} got unexpected keyword argument(s) {', '.join(map(repr, unknown))}. "
            f"Valid arguments: {', '.join(valid)}."
        )
    return kwargs
