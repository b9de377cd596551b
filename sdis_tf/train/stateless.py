"""A Keras model called as a pure function of given weights, keeping its new state.

Both trainers compute loss and gradients in a pure (XLA-compilable) function of
the weights, `model.stateless_call(trainable, non_trainable, x)`, and assign
the new non-trainable state (batch-norm statistics) outside it.
"""

from __future__ import annotations

import keras


class StatelessForward:
    """`forward(x)` = `model(x, training=True)` with the given weight tensors.

    `forward.state` holds the non-trainable values after the last call (the
    input's if never called), in the order of `model.non_trainable_variables`.
    """

    def __init__(self, model: keras.Model, trainable, non_trainable):
        self.model, self.trainable = model, trainable
        self.state = list(non_trainable)

    def __call__(self, x):
        outputs, self.state = self.model.stateless_call(self.trainable, self.state, x,
                                                        training=True)
        return outputs
