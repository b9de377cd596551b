"""sdis_tf.experiments."""
