"""Several networks trained side by side in one TensorFlow graph (horizontal fusion, as in HFTA): a whole epoch
and the validation pass as graph functions over tensors resident on the device, and Adam as plain variable updates
so that the optimizer steps of all the networks fuse into the same graph."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dl1.model import MLP

if TYPE_CHECKING:
    from dl1.train import ResidentData

VALIDATION_CHUNK = 32768
"""Validation jets per step of the validation pass (bounds its memory)."""


class Adam:
    """Adam (Keras defaults: beta1 0.9, beta2 0.999, epsilon 1e-7) as plain variable updates, fusable in a graph."""

    def __init__(self, variables: list, learning_rate: float) -> None:
        import tensorflow as tf

        self.variables = variables
        self.learning_rate = learning_rate
        self.m = [tf.Variable(tf.zeros_like(v)) for v in variables]
        self.v = [tf.Variable(tf.zeros_like(v)) for v in variables]
        self.t = tf.Variable(0.0)

    def apply(self, grads: list) -> None:
        import tensorflow as tf

        t = self.t.assign_add(1.0)
        b1, b2, eps = 0.9, 0.999, 1e-7
        b1_power, b2_power = tf.pow(b1, t), tf.pow(b2, t)
        for var, g, m, v in zip(self.variables, grads, self.m, self.v, strict=True):
            # TensorFlow's fused Adam kernel: one op per variable instead of a dozen element-wise ones
            tf.raw_ops.ResourceApplyAdam(
                var=var.handle,
                m=m.handle,
                v=v.handle,
                beta1_power=b1_power,
                beta2_power=b2_power,
                lr=tf.constant(self.learning_rate, tf.float32),
                beta1=tf.constant(b1),
                beta2=tf.constant(b2),
                epsilon=tf.constant(eps),
                grad=g,
            )


class FusedGroup:
    """Networks with one batch size trained side by side in one graph."""

    def __init__(
        self, data: ResidentData, models: list[MLP], opts: list[Adam], batch_size: int, xla: bool, compute_dtype: str
    ) -> None:
        import tensorflow as tf

        self.data = data
        self.models = models
        self.opts = opts
        self.batch_size = min(batch_size, data.n_train)
        self.steps = max(data.n_train // self.batch_size, 1)
        bs = self.batch_size
        models_t = tuple(models)
        opts_t = tuple(self.opts)

        def step(xb, yb, wb):
            losses = []
            wsum = tf.reduce_sum(wb)
            for model, opt in zip(models_t, opts_t, strict=True):
                with tf.GradientTape() as tape:
                    logits = model.logits(xb, compute_dtype)
                    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=logits)
                    loss = tf.reduce_sum(ce * wb) / wsum
                opt.apply(tape.gradient(loss, model.variables))
                losses.append(loss)
            return tf.stack(losses)

        step_fn = tf.function(step, jit_compile=True) if xla else step

        @tf.function
        def epoch(perm):
            total = tf.zeros(len(models_t))
            for i in tf.range(self.steps):
                idx = perm[i * bs : (i + 1) * bs]
                total += step_fn(tf.gather(data.x, idx), tf.gather(data.y, idx), tf.gather(data.w, idx))
            return total / tf.cast(self.steps, tf.float32)

        @tf.function
        def validate():
            n_chunks = (data.n_val + VALIDATION_CHUNK - 1) // VALIDATION_CHUNK
            loss_sum = tf.zeros(len(models_t))
            acc_sum = tf.zeros(len(models_t))
            for c in tf.range(n_chunks):
                lo = c * VALIDATION_CHUNK
                xb = data.x_val[lo : lo + VALIDATION_CHUNK]
                yb = data.y_val[lo : lo + VALIDATION_CHUNK]
                wb = data.w_val[lo : lo + VALIDATION_CHUNK]
                ls, accs = [], []
                for model in models_t:
                    logits = model.logits(xb)
                    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=logits)
                    ls.append(tf.reduce_sum(ce * wb))
                    hit = tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int32), yb), tf.float32)
                    accs.append(tf.reduce_sum(hit * wb))
                loss_sum += tf.stack(ls)
                acc_sum += tf.stack(accs)
            wtot = tf.reduce_sum(data.w_val)
            return loss_sum / wtot, acc_sum / wtot

        self.epoch = epoch
        self.validate = validate
