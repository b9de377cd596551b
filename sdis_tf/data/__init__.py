"""sdis_tf.data."""
