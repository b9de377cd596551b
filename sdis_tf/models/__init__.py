"""sdis_tf.models."""
