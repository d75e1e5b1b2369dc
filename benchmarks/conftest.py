"""Shared fixtures of the benchmark suites: the shipped model and pre-rendered frames."""

from pathlib import Path

import numpy as np
import pytest

from inspector.bundle.load import load_bundle
from inspector.inference.detector import Detector
from inspector.inference.heads.detect import Preprocessor
from inspector.sources.conveyor import ConveyorGenerator

MODEL = Path(__file__).resolve().parents[1] / "models" / "demo"


@pytest.fixture(scope="session")
def bundle():
    return load_bundle(MODEL, "int8")


@pytest.fixture(scope="session")
def frames():
    gen = ConveyorGenerator(2468)
    return [gen.part(i).image for i in range(16)]


@pytest.fixture(scope="session")
def detector(bundle):
    return Detector(bundle, conf=0.05, warmup=5)


@pytest.fixture(scope="session")
def float_tensors(bundle, frames):
    pre = Preprocessor(bundle.input_size)
    return [np.ascontiguousarray(pre(f)[0][..., ::-1].transpose(0, 3, 1, 2), np.float32) / 255.0 for f in frames]
