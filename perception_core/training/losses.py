"""Losses: segmentation cross-entropy, CenterNet focal + L1, and learned task balancing.

Under tf.distribute each replica sees a slice of the global batch, and Keras 3's optimizer sums the
replicas' gradients (``TFOptimizer._all_reduce_sum_gradients``). So every loss divides its replica's sum by
the count over the whole global batch (:func:`across_replicas`), and a term that does not depend on the
batch is added once in all (:func:`replica_share`): the replicas' losses, and gradients, then add up to
the one-device loss of the global batch. On one device both are no-ops.
"""

from __future__ import annotations

import keras
import tensorflow as tf

WH_WEIGHT = 1.0  # box size is regressed as a log, so its errors are on the offset's scale
OFFSET_WEIGHT = 1.0
MIN_SIZE_CELLS = 1e-2  # log floor; only non-centre cells (masked out of the loss) have size 0
FOCAL_EPS = 1e-4  # heatmap clipped to [eps, 1-eps]: log(0) never reaches the loss
MIN_TASK_LOSS = 1e-6  # floor of a loss before its log (uncertainty weights start at log(first loss))


def across_replicas(count):
    """``count`` summed over the replicas of the running step: a normaliser of the global batch.

    Itself on one device, and outside a replica context (a whole batch on one device, e.g. the loss that
    :meth:`TaskBalancer.start_at` starts from).
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return count
    return context.all_reduce(tf.distribute.ReduceOp.SUM, count)


def replica_share():
    """This replica's share of a term added once per global batch: 1 / the replicas in sync (1 on one device)."""
    context = tf.distribute.get_replica_context()
    return 1.0 if context is None else 1.0 / context.num_replicas_in_sync


def segmentation_loss(logits, mask, ignore_label, labelled=None):
    """Mean softmax cross-entropy over the global batch's pixels whose label is not ``ignore_label``. mask: (B,H,W)
    uint8.

    ``labelled`` (B,) is 1 for images with segmentation labels: the others add no pixel, whatever their mask.
    """
    labels = tf.cast(mask, tf.int32)
    valid = tf.not_equal(labels, ignore_label)
    if labelled is not None:
        valid = tf.logical_and(valid, tf.reshape(tf.cast(labelled, tf.bool), [-1, 1, 1]))
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.where(valid, labels, 0), logits=logits)
    valid = tf.cast(valid, ce.dtype)
    return tf.reduce_sum(ce * valid) / tf.maximum(across_replicas(tf.reduce_sum(valid)), 1.0)


def focal_loss(pred, target, labelled):
    """CenterNet's penalty-reduced focal loss on sigmoid heatmaps, normalised by the global batch's object count.

    ``labelled`` (B,) is 1 for images with detection labels, 0 for the others: an image without
    labels must not teach "no objects here", and its objects, if any, count for nothing.
    """
    pred = tf.clip_by_value(pred, FOCAL_EPS, 1.0 - FOCAL_EPS)
    labelled = tf.reshape(tf.cast(labelled, tf.bool), [-1, 1, 1, 1])
    pos = tf.cast(tf.equal(target, 1.0), pred.dtype)
    pos_loss = tf.where(labelled, tf.math.log(pred) * tf.square(1.0 - pred) * pos, 0.0)
    neg_loss = tf.where(labelled, tf.math.log(1.0 - pred) * tf.square(pred) * tf.pow(1.0 - target, 4.0) * (1.0 - pos),
                        0.0)
    objects = across_replicas(tf.reduce_sum(pos * tf.cast(labelled, pred.dtype)))
    return -(tf.reduce_sum(pos_loss) + tf.reduce_sum(neg_loss)) / tf.maximum(objects, 1.0)


def masked_l1(pred, target, centers):
    """L1 at object centres only, per centre of the global batch. centers: (B,h,w,1) 1 at each object's centre cell."""
    return tf.reduce_sum(tf.abs(pred - target) * centers) / tf.maximum(across_replicas(tf.reduce_sum(centers)), 1.0)


def detection_losses(outputs, targets):
    """{"heatmap","wh","offset"} losses from model outputs and dense CenterNet targets.

    ``det_wh`` predicts log(box size in cells): an L1 on the log is a relative size error, as IoU is,
    so a 6 px cone counts as much as a 200 px truck (raw-size L1, CenterNet's, is ruled by big boxes),
    and the head's outputs stay within a few units, which a fresh head reaches in tens of steps.
    """
    log_wh = tf.math.log(tf.maximum(targets["wh"], MIN_SIZE_CELLS))
    centers = targets["centers"] * tf.reshape(tf.cast(targets["det_labelled"], tf.float32), [-1, 1, 1, 1])
    return {
        "heatmap": focal_loss(outputs["det_heatmap"], targets["heatmap"], targets["det_labelled"]),
        "wh": masked_l1(outputs["det_wh"], log_wh, centers),
        "offset": masked_l1(outputs["det_offset"], targets["offset"], centers),
    }


def labelled_tasks(data, heads):
    """{head: 1.0 if any image of the (global) batch is labelled for that head's task, else 0.0}."""
    return {head: tf.minimum(across_replicas(tf.reduce_max(tf.cast(data[f"{head}_labelled"], tf.float32))), 1.0)
            for head in heads}


def task_losses(outputs, data, heads, ignore_label):
    """({"seg","det"} task losses for ``heads``, the detection loss's parts) from one batch."""
    losses, parts = {}, {}
    if "seg" in heads:
        losses["seg"] = segmentation_loss(outputs["seg_logits"], data["mask"], ignore_label, data.get("seg_labelled"))
    if "det" in heads:
        parts = detection_losses(outputs, data)
        losses["det"] = parts["heatmap"] + WH_WEIGHT * parts["wh"] + OFFSET_WEIGHT * parts["offset"]
    return losses, parts


def batch_loss(model, balancer, data, heads, ignore_label):
    """(total, task losses, detection parts) of one batch through ``model`` in training mode: the training step's
    loss. An image trains only the tasks it is labelled for; a task no image of the batch is labelled for adds
    nothing."""
    losses, parts = task_losses(model(data["image"], training=True), data, heads, ignore_label)
    return balancer(losses, labelled_tasks(data, heads)), losses, parts


class TaskBalancer(keras.layers.Layer):
    """Combines per-task losses with fixed weights or learned homoscedastic uncertainty.

    Uncertainty weighting (Kendall et al. 2018): ``sum_t exp(-s_t) * L_t + s_t`` with a learned
    log-variance s_t per task. It settles at s_t = log L_t, i.e. every task's loss normalised to ~1,
    so the small segmentation loss is no longer drowned by the detection loss in the shared backbone.
    ``start_at`` puts s_t there from the first batch: from zero, Adam moves s_t by about the learning
    rate per step, and the segmentation weight took ~2500 steps to climb to its level.
    ``weights`` are fixed multipliers, or with uncertainty each task's priority c_t in
    ``sum_t c_t * (exp(-s_t) * L_t + s_t)``: s_t still settles at log L_t, so c_t is the task's
    share of the shared gradient (a factor on L_t alone would be normalised away).
    """

    def __init__(self, tasks, mode="uncertainty", weights=None, **kwargs):
        super().__init__(**kwargs)
        if mode not in ("uncertainty", "fixed"):
            raise ValueError(f"mode must be 'uncertainty' or 'fixed', got {mode!r}")
        self.tasks = tuple(tasks)
        self.mode = mode
        self.task_weights = {t: float((weights or {}).get(t, 1.0)) for t in self.tasks}
        self.log_vars = {t: self.add_weight(name=f"log_var_{t}", shape=(), initializer="zeros",
                                            trainable=mode == "uncertainty" and len(self.tasks) > 1)
                         for t in self.tasks}

    def start_at(self, task_losses):
        """Initialise each learned log-variance at log(loss), where uncertainty weighting settles."""
        if self.mode == "uncertainty":
            for t in self.tasks:
                self.log_vars[t].assign(tf.math.log(tf.maximum(tf.cast(task_losses[t], tf.float32), MIN_TASK_LOSS)))

    def weights_now(self):
        """Effective multiplier of each task loss (for logging)."""
        if self.mode == "fixed":
            return {t: tf.constant(w) for t, w in self.task_weights.items()}
        return {t: self.task_weights[t] * tf.exp(-self.log_vars[t]) for t in self.tasks}

    def call(self, task_losses, present=None):
        """The total loss; ``present`` ({task: 0.0 or 1.0}, see :func:`labelled_tasks`) drops the terms of
        tasks no image of the batch is labelled for: their loss is a constant 0, and uncertainty's
        ``+ s_t`` alone would only drive that task's weight up."""
        present = present or {t: 1.0 for t in self.tasks}
        if self.mode == "fixed" or len(self.tasks) == 1:
            return tf.add_n([self.task_weights[t] * task_losses[t] * present[t] for t in self.tasks])
        share = replica_share()  # s_t counts once per global batch, however many replicas add their part
        return tf.add_n([self.task_weights[t] * (tf.exp(-self.log_vars[t]) * task_losses[t] + share * self.log_vars[t])
                         * present[t] for t in self.tasks])
