"""How much memory one queued trial needs, so that `--jobs` is refused before it swaps or gets killed.

A worker is DVC's queue worker and exec-run (about 0.2 GiB) plus one stage at a time, of which train is the
largest: the runtime itself, the decoded images, and the model's activations. The figures are the ones
measured in docs/workflows.md (#experiments): about 1.0 GiB for the tests' tiny params, 1.1 GiB for the demo,
14.3 GiB for the tutorial's model at 180x180 and batch 128 on a CPU; activations scale with the batch, the
pixels and the widths.
"""

from __future__ import annotations

from catsdogs.tuning.space import values_to_check, with_value

GIB = 2**30
RUNTIME = 1.0 * GIB  # DVC's worker and exec-run, and a stage's Python, TensorFlow and Keras
TUTORIAL_ACTIVATIONS = 13.3 * GIB  # the tutorial's model at the sizes below, on a CPU (14.3 GiB in all)
TUTORIAL_BATCH, TUTORIAL_PIXELS = 128, 180 * 180
TUTORIAL_WIDTHS = 128 + 256 + 512 + 728 + 1024  # entry, blocks, exit


def worker_bytes(p: dict, images: int) -> float:
    """About the peak memory of one worker training with params `p` (a params.yaml mapping) on `images`."""
    height, width = p["data"]["image_size"]
    model = p["model"]
    widths = model["entry_width"] + sum(model["block_widths"]) + model["exit_width"]
    activations = (TUTORIAL_ACTIVATIONS * p["data"]["batch_size"] / TUTORIAL_BATCH
                   * height * width / TUTORIAL_PIXELS * widths / TUTORIAL_WIDTHS)
    return RUNTIME + images * height * width * 3 + activations


def largest(p: dict, space: dict) -> dict:
    """`p` with each sized key of the space (batch, image size, widths) at its largest value: the trial that
    needs the most memory."""
    for key, entry in space.items():
        if key.split(".")[0] not in ("data", "model"):
            continue
        numeric = [v for v in values_to_check(entry) if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if numeric:
            p = with_value(p, key, max(numeric))
    return p
