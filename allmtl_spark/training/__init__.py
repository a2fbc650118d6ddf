"""Multistage transfer learning: splits, augmentation, Petastorm datasets, Horovod training stages."""
