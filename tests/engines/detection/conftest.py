"""Detection tests need the [detection] extra; the shared generated dataset is built once."""

from __future__ import annotations

import pytest

pytest.importorskip("torchvision")
pytest.importorskip("pycocotools")


@pytest.fixture(scope="session")
def shapes(tmp_path_factory):
    """A small generated COCO-format dataset (shapes only: independent of installed data)."""
    from eakd.engines.detection import make_shapes_dataset

    root = tmp_path_factory.mktemp("shapes")
    return make_shapes_dataset(
        root, num_train=16, num_val=8, image_size=64, object_size=(12, 28), fashion_mnist=False
    )
