"""Detection and segmentation fine-tuning on COCO-format data (``zoo finetune-dense``).

``data``: a COCO-format folder (images, one instances JSON, optional semantic-mask PNGs, split
lists) as torch datasets; ``metrics``: COCO AP through pycocotools (the ``detection`` extra) and
mIoU; ``loop``: the training loop writing a run directory like ``zoo train``'s. The models are
``zoo.detection.fasterrcnn`` and ``zoo.segmentation.fcn/deeplabv3``.
"""
