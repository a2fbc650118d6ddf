"""allmtl_spark: multistage transfer learning for ALL on Spark."""
