"""TFLite: the flatbuffer reader, the graph-driven converter, and the real MobileNets it converts.

Real files: ../shared/weights/tflite_mobilenet (quantization-aware-trained TF-slim MobileNets from
google-coral/test_data). The TFLite runtime (ai_edge_litert) is only a reference here; tests
that need it skip where it is not installed.
"""

from __future__ import annotations

import csv
import dataclasses
import random
import re
import warnings

import pytest
import torch
from conftest import SHARED
from PIL import Image

import zoo
from zoo.convert import FORMATS, ConversionError, convert, convert_file, tflite
from zoo.convert.tflite import TFLiteFormatError, parse_tflite, read_tflite
from zoo.models.mobilenet import ConvBnAct
from zoo.registry import get_spec
from zoo.transforms import build_transforms

TFLITE = SHARED / "weights" / "tflite_mobilenet"
DEMO = SHARED / "data" / "demo_images"
IMAGENETTE_VAL = SHARED / "data" / "imagenette2_160" / "val"

V1_1_0 = (
    "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite",
    "mobilenet_quant_v1_224_head_layers.tflite",
)
# zoo twin -> its TFLite file(s), in graph order
MODELS = {
    "mobilenetv2_1_0_tf": ("mobilenet_v2_1.0_224_quant.tflite",),
    "mobilenet1_0_tf": V1_1_0,
    "mobilenet0_75_tf": ("mobilenet_v1_0.75_192_quant.tflite",),
    "mobilenet0_5_tf": ("mobilenet_v1_0.5_160_quant.tflite",),
    "mobilenet0_25_tf": ("mobilenet_v1_0.25_128_quant.tflite",),
}
# The reference: TFLite runtime, top-1 restricted to the 10 Imagenette classes, on the
# first 30 files of each class of imagenette2_160/val (resize 1/0.875, bilinear, centre crop).
RUNTIME_SUBSET_TOP1 = {
    "mobilenetv2_1_0_tf": 95.7,
    "mobilenet1_0_tf": 95.0,
    "mobilenet0_75_tf": 94.0,
    "mobilenet0_5_tf": 92.3,
    "mobilenet0_25_tf": 86.0,
}
# The same runtime and images, top-1 taken from its pre-softmax logits instead of its uint8
# softmax output (benchmarks/tflite_imagenette.py --limit-per-class 30): restricted to 10 classes
# the uint8 probabilities often tie (all 0/256) and the argmax then takes the first class, which
# costs the figures above 2-4 points; these tie-free figures are the stricter reference.
RUNTIME_LOGITS_SUBSET_TOP1 = {
    "mobilenetv2_1_0_tf": 98.0,
    "mobilenet1_0_tf": 97.67,
    "mobilenet0_75_tf": 96.67,
    "mobilenet0_5_tf": 94.67,
    "mobilenet0_25_tf": 89.33,
}
# op counts of each file: (CONV_2D, DEPTHWISE_CONV_2D, ADD, AVERAGE_POOL_2D, SOFTMAX)
OP_COUNTS = {
    "mobilenet_v2_1.0_224_quant.tflite": (36, 17, 10, 1, 1),
    "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite": (14, 13, 0, 1, 0),
    "mobilenet_quant_v1_224_head_layers.tflite": (1, 0, 0, 0, 1),
    "mobilenet_v1_0.75_192_quant.tflite": (15, 13, 0, 1, 1),
    "mobilenet_v1_0.5_160_quant.tflite": (15, 13, 0, 1, 1),
    "mobilenet_v1_0.25_128_quant.tflite": (15, 13, 0, 1, 1),
}


def _file(name: str):
    path = TFLITE / name
    if not path.is_file():
        pytest.skip(f"{path} not available")
    return path


def _paths(name: str) -> list:
    return [_file(f) for f in MODELS[name]]


def _converted_model(name: str) -> torch.nn.Module:
    converted = convert(_paths(name), model=name, format="tflite")
    model = get_spec(name).build(converted.config).eval()
    model.load_state_dict(converted.state_dict)
    return model


# --- the reader -----------------------------------------------------------------------------


@pytest.mark.parametrize("filename", sorted(OP_COUNTS))
def test_reader_parses_every_file(filename):
    model = read_tflite(_file(filename))
    assert model.version == 3 and len(model.subgraphs) == 1
    graph = model.subgraphs[0]
    ops = [op.op for op in graph.operators]
    kinds = ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "AVERAGE_POOL_2D", "SOFTMAX")
    assert tuple(ops.count(k) for k in kinds) == OP_COUNTS[filename]
    first = graph.operators[0]
    if first.op == "CONV_2D" and graph.tensors[first.inputs[0]].shape[-1] == 3:  # the stem
        assert first.options == {
            "padding": "SAME", "stride": (2, 2), "activation": "RELU6", "dilation": (1, 1)
        }  # fmt: skip
    for op in graph.operators:
        if op.op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            weight, bias = (graph.tensors[i] for i in op.inputs[1:3])
            assert weight.type == "uint8" and len(weight.quantization.scale) == 1
            assert bias.type == "int32" and bias.quantization.zero_point == (0,)
            w = model.dequantize(weight)
            q = model.array(weight).double()
            scale, zero = weight.quantization.scale[0], weight.quantization.zero_point[0]
            torch.testing.assert_close(w.double(), (q - zero) * scale, rtol=1e-7, atol=0)
            assert w.dtype == torch.float32 and torch.isfinite(w).all()
            if op.op == "DEPTHWISE_CONV_2D":
                assert weight.shape[0] == 1 and op.options["depth_multiplier"] == 1


def test_reader_agrees_with_the_runtime():
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    import numpy as np

    for filename in OP_COUNTS:
        path = _file(filename)
        graph = read_tflite(path).subgraphs[0]
        model = read_tflite(path)
        interpreter = litert.Interpreter(model_path=str(path))
        constants = 0
        for detail in interpreter.get_tensor_details():
            tensor = graph.tensors[detail["index"]]
            assert tensor.name == detail["name"]
            assert list(tensor.shape) == detail["shape"].tolist()
            assert tensor.type == np.dtype(detail["dtype"]).name
            scale, zero = detail["quantization"]
            if tensor.quantization is None:
                assert scale == 0
            else:
                assert (tensor.quantization.scale[0], tensor.quantization.zero_point[0]) == (
                    pytest.approx(scale, rel=1e-7),
                    zero,
                )
            if model.is_constant(tensor):
                try:
                    expected = interpreter.get_tensor(detail["index"])
                except ValueError:  # tensors the runtime hands to a delegate
                    continue
                assert np.array_equal(model.array(tensor).numpy(), expected)
                constants += 1
        assert constants > 0


def test_truncated_and_foreign_files_are_clear_errors(tmp_path):
    for filename in ("mobilenet_v1_0.25_128_quant.tflite", V1_1_0[1]):
        data = _file(filename).read_bytes()
        rng = random.Random(0)
        cuts = [0, 7, 8, 64, len(data) // 2, len(data) - 100, len(data) - 1]
        for cut in cuts + [rng.randrange(len(data)) for _ in range(20)]:
            with pytest.raises(TFLiteFormatError, match="truncated|not a TFLite model"):
                parse_tflite(data[:cut], filename)
        cut_file = tmp_path / filename
        cut_file.write_bytes(data[: len(data) - 10])  # e.g. its appended labels zip cut off
        with pytest.raises(ValueError, match="truncated .*re-download"):
            read_tflite(cut_file)
        wrong = tmp_path / "wrong.tflite"
        wrong.write_bytes(data[:4] + b"TFL2" + data[8:])
        with pytest.raises(ValueError, match=r"not a TFLite model \(file identifier b'TFL2'"):
            read_tflite(wrong)
    png = tmp_path / "photo.tflite"
    png.write_bytes((DEMO / "cat.png").read_bytes()[:4096])
    with pytest.raises(TFLiteFormatError, match="not a TFLite model"):
        convert(png, model="mobilenet0_25_tf")


def test_corrupt_structure_is_never_an_index_or_struct_error():
    """Random damage to the flatbuffer's tables parses or fails as TFLiteFormatError, only."""
    path = _file(V1_1_0[1])
    data = path.read_bytes()
    weights = max(read_tflite(path).buffers, key=len)
    start = data.find(weights)
    structure = [i for i in range(len(data)) if not start <= i < start + len(weights)]
    rng = random.Random(1)
    outcomes = {"parsed": 0, "refused": 0}
    for trial in range(300):
        damaged = bytearray(data)
        pos = rng.choice(structure[:-4])
        if trial % 2:
            damaged[pos] = rng.randrange(256)
        else:
            damaged[pos : pos + 4] = rng.randrange(2**32).to_bytes(4, "little")
        try:
            model = parse_tflite(bytes(damaged), "damaged")
            for tensor in model.subgraphs[0].tensors:
                if model.is_constant(tensor):
                    model.dequantize(tensor)
            outcomes["parsed"] += 1
        except TFLiteFormatError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0


# --- the converter --------------------------------------------------------------------------


def test_format_is_registered():
    fmt = FORMATS["tflite"]
    assert fmt.extensions == (".tflite",) and fmt.multi_file
    assert fmt.supports("mobilenet") and fmt.supports("mobilenetv2")
    assert not fmt.supports("resnet")
    # inferred from the extension, num_classes from the graph
    converted = convert(_file(MODELS["mobilenet0_25_tf"][0]), model="mobilenet0_25_tf")
    assert converted.report.source_format == "tflite" and converted.config.num_classes == 1001


def test_layouts_dequantization_and_folded_bn():
    path = _file(MODELS["mobilenet0_25_tf"][0])
    converted = convert(path, model="mobilenet0_25_tf", format="tflite", num_classes=1001)
    state, report = converted.state_dict, converted.report
    model = read_tflite(path)
    graph = model.subgraphs[0]
    stem, dw = graph.operators[0], graph.operators[1]
    w_stem = model.dequantize(graph.tensors[stem.inputs[1]])  # OHWI
    w_dw = model.dequantize(graph.tensors[dw.inputs[1]])  # 1HWC
    assert torch.equal(state["stem.conv.weight"], w_stem.permute(0, 3, 1, 2))
    assert torch.equal(state["blocks.0.dw.conv.weight"], w_dw.permute(3, 0, 1, 2))
    assert state["blocks.0.dw.conv.weight"].shape == (8, 1, 3, 3)
    bias = graph.tensors[stem.inputs[2]]
    raw = model.array(bias).double() * bias.quantization.scale[0]
    assert torch.equal(state["stem.bn.bias"], raw.float())
    eps = get_spec("mobilenet0_25_tf").config.bn_eps
    for unit in ("stem", "blocks.0.dw", "blocks.12.pw"):
        assert torch.all(state[f"{unit}.bn.weight"] == 1)
        assert torch.all(state[f"{unit}.bn.running_mean"] == 0)
        assert torch.all(state[f"{unit}.bn.running_var"] == torch.tensor(1 - eps))
    assert state["fc.weight"].shape == (1001, 256) and state["fc.bias"].shape == (1001,)
    # exact once: 27 conv units and the classifier, weight and bias each; the reshape's target
    # shape is ignored; the softmax and the input quantization are reported, not converted
    assert report.mapped == 2 * 27 + 2
    assert report.ignored == ("MobilenetV1/Logits/SpatialSqueeze",)
    assert any("SOFTMAX" in note for note in report.notes)
    assert any("scale 0.0078125, zero point 128" in note for note in report.notes)
    assert "stem.bn.running_var" in report.defaulted


def test_two_files_chain_in_either_order():
    backbone, head = _paths("mobilenet1_0_tf")
    one = convert([backbone, head], model="mobilenet1_0_tf", format="tflite")
    other = convert([head, backbone], model="mobilenet1_0_tf")
    assert one.state_dict.keys() == other.state_dict.keys()
    assert all(torch.equal(one.state_dict[k], other.state_dict[k]) for k in one.state_dict)
    assert one.state_dict["fc.weight"].shape == (1001, 1024)
    chained = [n for n in one.report.notes if n.startswith("chained")]
    assert chained == [
        f"chained {backbone.name} -> {head.name} at [1, 1, 1, 1024] "
        "(scale 0.0235284772, zero point 0 on both sides)"
    ]
    assert one.report.source == f"{backbone} + {head}"


def test_chain_junction_must_match(monkeypatch):
    backbone, head = _paths("mobilenet1_0_tf")
    original = tflite.read_tflite

    def shifted(path):  # the head's input quantized differently from the backbone's output
        model = original(path)
        if path.name != head.name:
            return model
        graph = model.subgraphs[0]
        index = graph.inputs[0]
        tensor = graph.tensors[index]
        quant = dataclasses.replace(tensor.quantization, scale=(0.05,))
        tensors = list(graph.tensors)
        tensors[index] = dataclasses.replace(tensor, quantization=quant)
        graph = dataclasses.replace(graph, tensors=tuple(tensors))
        return dataclasses.replace(model, subgraphs=(graph,))

    monkeypatch.setattr(tflite, "read_tflite", shifted)
    with pytest.raises(ConversionError, match="cannot chain .*scale=\\(0.05,\\)"):
        convert([backbone, head], model="mobilenet1_0_tf")


@pytest.mark.parametrize(
    ("files", "name", "message"),
    [
        # wrong width: the first op already names the mismatch
        (MODELS["mobilenet0_25_tf"], "mobilenet0_5_tf",
         r"op 0 \(CONV_2D\): stem.conv.weight \[8, 3, 3, 3\] vs the twin's \[16, 3, 3, 3\]"),
        # GluonCV's own MobileNet (ReLU, symmetric padding) is not the network in the file
        (MODELS["mobilenet0_25_tf"], "mobilenet0_25",
         r"op 0 \(CONV_2D\) -> stem: activation RELU6 vs the twin's RELU"),
        # a v2 graph onto a v1 twin: the linear bottleneck's projection is op 2
        (MODELS["mobilenetv2_1_0_tf"], "mobilenet1_0_tf",
         r"op 2 \(CONV_2D\) -> blocks.0.pw: activation NONE vs the twin's RELU6"),
        (MODELS["mobilenet0_25_tf"], "mobilenetv2_1_0_tf", r"op 0 \(CONV_2D\): stem.conv.weight"),
        # the backbone alone has no classifier
        (V1_1_0[:1], "mobilenet1_0_tf", "the graph ends before the twin does: .*logits fc"),
        # two files that do not connect
        (("mobilenet_v1_0.25_128_quant.tflite", V1_1_0[1]), "mobilenet0_25_tf",
         r"ends in \[1, 1001\]; 0 of the other files start there"),
    ],
)  # fmt: skip
def test_mismatches_name_the_op(files, name, message):
    with pytest.raises(ConversionError, match=message):
        convert([_file(f) for f in files], model=name, format="tflite")


def test_refusals():
    path = _file(MODELS["mobilenet0_25_tf"][0])
    with pytest.raises(ConversionError, match="has 1001 outputs, num_classes=1000 was asked"):
        convert(path, model="mobilenet0_25_tf", num_classes=1000)
    with pytest.raises(ConversionError, match="does not cover resnet18_v1b .*gluoncv, timm"):
        convert(path, model="resnet18_v1b", format="tflite")
    with pytest.raises(ConversionError, match="is a tflite file, but .* not cover resnet18_v1b"):
        convert(path, model="resnet18_v1b")  # the extension says what it is (issue 10)
    with pytest.raises(ConversionError, match="the timm format reads one file, got 2"):
        convert([path, path], model="resnet18_v1b", format="timm")
    with pytest.raises(ConversionError, match="expected exactly one file whose input is an RGB"):
        convert([path, path], model="mobilenet0_25_tf")


def test_convert_file_keeps_the_background_offset(tmp_path):
    path = _file(MODELS["mobilenet0_25_tf"][0])
    dst = tmp_path / "m.safetensors"
    report = convert_file(path, dst, model="mobilenet0_25_tf", labels="imagenet-1k", label_offset=1)
    assert report.num_classes == 1001
    model = zoo.get_model("mobilenet0_25_tf", pretrained=dst).eval()
    assert model.num_classes == 1000
    reference = _converted_model("mobilenet0_25_tf")
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x)[:, 1:])


# --- against the TFLite runtime -------------------------------------------------------------


def _runtime(paths, keep_intermediates: bool = False):
    """Interpreters of a (chained) model and a function running uint8 NHWC input through."""
    litert = pytest.importorskip("ai_edge_litert.interpreter")

    interpreters = []
    for path in paths:
        with warnings.catch_warnings():  # "intended for debugging": that is what we do
            warnings.simplefilter("ignore", UserWarning)
            interpreter = litert.Interpreter(
                model_path=str(path), experimental_preserve_all_tensors=keep_intermediates
            )
        interpreter.allocate_tensors()
        interpreters.append(interpreter)

    def run(pixels):
        out = pixels
        for interpreter in interpreters:
            interpreter.set_tensor(interpreter.get_input_details()[0]["index"], out)
            interpreter.invoke()
            out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        return out

    return interpreters, run


def _quantize_input(interpreter, x: torch.Tensor):
    """zoo's preprocessed float pixels (N, C, H, W), quantized as the model's input expects."""
    import numpy as np

    scale, zero = interpreter.get_input_details()[0]["quantization"]
    q = np.round(x.permute(0, 2, 3, 1).numpy() / scale + zero)
    return np.clip(q, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_layer_matches_the_runtime_to_half_a_quantization_step(name):
    """Fed the runtime's own input of each conv, each converted unit gives the runtime's output.

    The runtime computes in integers and rounds each output to its uint8 grid (clipping to the
    grid's range); so the float layer, clipped the same way, is within half a step: any layout,
    padding, dequantization, activation or bias mistake is many steps off.
    """
    import numpy as np

    paths = _paths(name)
    interpreters, run = _runtime(paths, keep_intermediates=True)
    model = _converted_model(name)
    units = [m for m in model.modules() if isinstance(m, ConvBnAct)]
    x = build_transforms(get_spec(name).preprocess)(Image.open(DEMO / "parrot.jpg").convert("RGB"))
    run(_quantize_input(interpreters[0], x[None]))
    layers = iter([*units, model.fc])
    checked = 0
    for path, interpreter in zip(paths, interpreters, strict=True):
        details = {d["index"]: d for d in interpreter.get_tensor_details()}

        def tensor(index, interpreter=interpreter, details=details):
            scale, zero = details[index]["quantization"]
            q = interpreter.get_tensor(index).astype(np.float64)
            return torch.from_numpy((q - zero) * scale).float().permute(0, 3, 1, 2), scale, zero

        for op in read_tflite(path).subgraphs[0].operators:
            if op.op not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                continue
            layer = next(layers)
            x_in, _, _ = tensor(op.inputs[0])
            expected, scale, zero = tensor(op.outputs[0])
            fc = layer is model.fc  # the logits conv: 1x1 on the pooled (N, C, 1, 1) features
            with torch.no_grad():
                y = layer(x_in.flatten(1))[:, :, None, None] if fc else layer(x_in)
            y = y.clamp((0 - zero) * scale, (255 - zero) * scale)
            steps = ((y - expected).abs().max() / scale).item()
            assert steps <= 0.501, f"{path.name} {op.describe()}: {steps:.2f} steps off"
            checked += 1
    assert checked == len(units) + 1 and next(layers, None) is None


@pytest.mark.parametrize("name", list(MODELS))
def test_converted_twin_agrees_with_the_runtime_on_photos(name):
    """Same top-1 except on near ties, and probabilities close (L1, mean over photos).

    The runtime is uint8 all through (activations, probabilities in 1/256), the twin float32; on
    a photo where classes are nearly tied they may pick different ones (measured: 0-1 photo of 13
    per model: rocket.jpg (missile / projectile / space shuttle), grace_hopper.png (military
    uniform / mortarboard), china.jpg (palace / ...); the twin's two probabilities within 0.08).
    """
    import numpy as np

    interpreters, run = _runtime(_paths(name))
    model = _converted_model(name)
    transform = build_transforms(get_spec(name).preprocess)
    photos = sorted(p for p in DEMO.iterdir() if p.suffix in (".jpg", ".png"))
    x = torch.stack([transform(Image.open(p).convert("RGB")) for p in photos])
    with torch.no_grad():
        probs = model(x).softmax(1)
    pixels = _quantize_input(interpreters[0], x)
    expected = np.stack([run(p[None]).reshape(-1) for p in pixels]) / 255.0
    distances, differ = [], []
    for photo, ours, theirs in zip(photos, probs.numpy(), expected, strict=True):
        distances.append(np.abs(ours - theirs).sum())
        a, b = int(ours.argmax()), int(theirs.argmax())
        if a != b:
            differ.append(photo.name)
            # each one's top-1 is in the other's top 3 (ties count: uint8 probabilities tie), and
            # the twin's probabilities of the two are close
            assert (ours > ours[b]).sum() < 3 and (theirs > theirs[a]).sum() < 3, photo.name
            assert ours[a] - ours[b] < 0.1, photo.name
    assert len(differ) <= 1, differ
    assert np.mean(distances) < 0.2


# --- through the weight hub (the must-shows) ---------------------------------------


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """get_model(..., pretrained=True) served from the shared copy of the files, offline."""
    if not TFLITE.is_dir():
        pytest.skip(f"{TFLITE} not available")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_HOME", str(tmp_path_factory.mktemp("zoo_home")))
        mp.setenv("ZOO_MIRROR", str(TFLITE))
        mp.setenv("ZOO_OFFLINE", "1")
        mp.setenv("ZOO_QUIET", "1")
        mp.delenv("ZOO_MANIFESTS", raising=False)
        yield


def _expected_classes(row: dict[str, str]) -> set[int] | None:
    """labels.csv: an index, a range "a-b", alternatives "a|b|c", or "-" (no single class);
    a note "any of a-b ok" in the label widens a single index."""
    spec = row["expected_imagenet_index"].strip()
    if spec == "-":
        return None
    note = re.search(r"any of (\d+)-(\d+)", row["expected"])
    if note:
        return set(range(int(note[1]), int(note[2]) + 1))
    if "-" in spec:
        low, high = spec.split("-")
        return set(range(int(low), int(high) + 1))
    return {int(i) for i in spec.split("|")}


def test_v2_predicts_the_demo_photos(hub):
    with (DEMO / "labels.csv").open(newline="") as f:
        rows = [(r["file"], _expected_classes(r)) for r in csv.DictReader(f)]
    labelled = [(DEMO / file, classes) for file, classes in rows if classes is not None]
    assert len(labelled) == 12
    model = zoo.get_model("mobilenetv2_1_0_tf", pretrained=True)
    assert model.num_classes == 1000
    predictions = zoo.predict(model, [path for path, _ in labelled], topk=5)
    top1 = 0
    for (path, classes), top5 in zip(labelled, predictions, strict=True):
        indices = [p.index for p in top5]
        assert classes & set(indices), f"{path.name}: {indices} vs {sorted(classes)[:5]}"
        top1 += indices[0] in classes
    assert top1 >= 11, f"top-1 on {top1} of 12"


@pytest.mark.parametrize("name", list(MODELS))
def test_imagenette_subset_within_1_5_points_of_the_runtime(hub, name):
    if not IMAGENETTE_VAL.is_dir():
        pytest.skip(f"{IMAGENETTE_VAL} not available")
    model = zoo.get_model(name, pretrained=True)
    result = zoo.evaluate(
        model, IMAGENETTE_VAL, limit_per_class=30, batch_size=50, workers=0, progress=False
    )
    reference, tie_free = RUNTIME_SUBSET_TOP1[name], RUNTIME_LOGITS_SUBSET_TOP1[name]
    print(
        f"{name}: zoo {result.top1_restricted:.1f}% vs runtime {reference}% "
        f"(from its logits {tie_free}%), 10-way top-1 on 300 images"
    )
    assert result.images == 300
    assert result.top1_restricted >= reference - 1.5, (name, result.top1_restricted, reference)
    assert result.top1_restricted >= tie_free - 1.5, (name, result.top1_restricted, tie_free)
