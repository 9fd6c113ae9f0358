"""The worked example of CONTRIBUTING.md ("add a model in one file") is real code: it is extracted
from the document, imported by its import string, held to the model contract, and run end to end
through the harness."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from autorec.interactions import Interactions
from autorec.models import registry
from baselines.simple import GlobalMean
from tests.synthetic_parts import learnable

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def example_module(tmp_path_factory) -> Path:
    text = (REPO / "CONTRIBUTING.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S)
    assert code is not None, "CONTRIBUTING.md has no python code block"
    folder = tmp_path_factory.mktemp("contrib")
    (folder / "item_mean.py").write_text(code.group(1))
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    sys.modules.pop("item_mean", None)


def test_the_example_is_a_working_model(example_module):
    ref = registry.get("item_mean:ItemMean")
    assert ref.backend == "numpy"
    data = learnable()
    model = ref.build({"shrinkage": 5.0})
    info = model.fit(data.train, data.valid)
    assert info.best_epoch == 1
    pred = model.predict(data.test.users, data.test.items)
    assert pred.min() >= 1.0 and pred.max() <= 5.0
    floor = GlobalMean()
    floor.fit(data.train)
    assert model.evaluate(data.test)["rmse"] < floor.evaluate(data.test)["rmse"]
    # the cold-start policy comes from the base class, not from the example's code: item 0 unseen
    keep = data.train.items != 0
    train = Interactions(
        data.train.users[keep],
        data.train.items[keep],
        data.train.ratings[keep],
        data.train.n_users,
        data.train.n_items,
        data.train.rating_scale,
    )
    cold = ref.build({"cold_start": "constant:2.5"})
    cold.fit(train)
    assert cold.predict([0, 0], [0, 1]).tolist()[0] == 2.5
    assert ref.space() == {"shrinkage": {"dist": "loguniform", "low": 0.1, "high": 100.0}}
