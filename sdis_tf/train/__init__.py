"""sdis_tf.train."""
