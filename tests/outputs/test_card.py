from __future__ import annotations

import yaml

from job.outputs.card import front_matter, md_cell


def test_md_cell_escapes_html_pipes_and_newlines() -> None:
    assert md_cell('<b>x</b> | "y"\nz') == "&lt;b&gt;x&lt;/b&gt; &#124; &quot;y&quot; z"
    assert md_cell(None) == ""


def test_front_matter_survives_hostile_strings() -> None:
    meta = front_matter(
        {
            "languages": ["en", "de"],
            "thumbnail": "predictions.png",
            "sampling": {"start_texts": ['a: "b" --- #c']},
            "base_model_id": None,
        }
    )
    loaded = yaml.safe_load(yaml.safe_dump(meta))
    assert loaded["widget"] == [{"text": 'a: "b" --- #c'}]
    assert loaded["language"] == ["en", "de"] and "base_model" not in loaded


def test_a_prediction_with_nothing_after_its_prompt_is_empty() -> None:
    from job.outputs.card import empty
    from job.outputs.predict import Prediction

    assert empty(Prediction(prompt="I wish", text="I wish"))  # a held-out German archive's
    assert empty(Prediction(prompt="I wish", text="I wish "))
    assert not empty(Prediction(prompt="I wish", text="I wish it rained"))
