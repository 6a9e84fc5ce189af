"""Names of the weight formats zoo reads, defined once and torch-free.

The manifest checks each artifact's ``format`` against :data:`SOURCE_FORMATS`, ``zoo.convert``
registers one converter under each name in :data:`CONVERTER_FORMATS` (a test checks that they
agree), and nothing here imports torch, so the manifest and the CLI can name them cheaply.
"""

from __future__ import annotations

ZOO = "zoo"  # a zoo-layout safetensors file: loaded as it is, never converted
GLUONCV = "gluoncv"  # MXNet .params from GluonCV's model zoo
TIMM = "timm"  # PyTorch state dicts in timm's module names
TORCHVISION = "torchvision"  # PyTorch state dicts in torchvision's module names
TFLITE = "tflite"  # TensorFlow Lite flatbuffers (the MobileNet *_tf twins)

CONVERTER_FORMATS = (GLUONCV, TIMM, TORCHVISION, TFLITE)
SOURCE_FORMATS = (ZOO, *CONVERTER_FORMATS)
