"""Batches of decoded images for Keras, gathered from the image cache in a order fixed by (seed, epoch).

Imported only after `catsdogs.backend.select()` has chosen Keras' backend.
"""

from __future__ import annotations

import keras
import numpy as np


class Batches(keras.utils.PyDataset):
    """Batches of (uint8 images, labels) gathered from the decoded array, in the order of `indices`,
    or reshuffled every epoch; `transform` (the CPU augmentation) is applied to each batch of images.

    The order of epoch e depends only on (seed, e), so a run resumed at epoch e sees the same batches.
    """

    def __init__(self, array, labels, indices, batch_size: int, shuffle: bool, seed: int, transform=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.array, self.labels, self.transform = array, labels, transform
        self.indices = np.asarray(indices)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.epoch = 0
        self._order = self._order_for(0)

    def _order_for(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return self.indices
        order = np.random.default_rng([self.seed, epoch]).permutation(self.indices)
        # Sorted reads are faster from a memory map, and the order within a batch does not matter.
        for start in range(0, len(order), self.batch_size):
            order[start : start + self.batch_size].sort()
        return order

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._order = self._order_for(epoch)

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)

    def __getitem__(self, i: int):
        batch = self._order[i * self.batch_size : (i + 1) * self.batch_size]
        images = self.array[batch]
        return (self.transform(images) if self.transform else images), self.labels[batch]

    def on_epoch_end(self) -> None:
        self.set_epoch(self.epoch + 1)
