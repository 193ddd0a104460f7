"""Fixtures: tiny fake datasets in tmp_path (writers in data_fakes.py)."""

from data_fakes import cifar10_root, cifar100_root, fashion_root, imagenet_root, tiny_root

__all__ = ["cifar10_root", "cifar100_root", "fashion_root", "imagenet_root", "tiny_root"]
