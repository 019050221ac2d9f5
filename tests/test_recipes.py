"""Dataset recipes: real schemas (SlimOrca, HH-RLHF, HEx-PHI, prompt/response tables) as rows with stable ids,
bad datasets stopped with a message naming the file and the field. Every file is written here (no downloads)."""

import json
from pathlib import Path

import pandas as pd
import pytest

from seal_ray.cli import main
from seal_ray.config import RecipeSource, load_cell_config
from seal_ray.errors import ConfigError, UserError
from seal_ray.recipes import RECIPES, load_rows, source_digest
from seal_ray.stages import data
from seal_ray.stages.common import encode
from seal_ray.tokenizer import CharTokenizer


def slimorca_record(n: int, system: str = "you are a helpful assistant.") -> dict:
    turns = [{"from": "human", "value": f"question {n}"}, {"from": "gpt", "value": f"answer {n}"},
             {"from": "human", "value": "a second turn"}, {"from": "gpt", "value": "not used"}]
    return {"conversations": ([{"from": "system", "value": system}] if system else []) + turns}


def hh_record(n: int) -> dict:
    return {"chosen": f"\n\nHuman: how do i do thing {n}?\n\nAssistant: like this {n}.\n\nHuman: thanks\n\nAssistant: welcome",
            "rejected": f"\n\nHuman: how do i do thing {n}?\n\nAssistant: no."}


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def write_hexphi(directory, per_category: dict[int, list[str]]) -> str:
    directory.mkdir(exist_ok=True)
    for number, lines in per_category.items():
        (directory / f"category_{number}.csv").write_text("".join(line + "\n" for line in lines))
    return str(directory)


def source(path: str, **extra) -> RecipeSource:
    return RecipeSource(path=path, **extra)


def test_slimorca_rows_put_the_system_turn_before_the_first_human_turn(tmp_path):
    path = write_jsonl(tmp_path / "orca.jsonl", [slimorca_record(0), slimorca_record(1, system="")])
    rows = load_rows(source(path), "ft", "data.ft")
    assert rows == [
        {"id": 0, "prompt": "you are a helpful assistant.\n\nquestion 0", "response": "answer 0"},
        {"id": 1, "prompt": "question 1", "response": "answer 1"},
    ]


def test_hh_rows_are_the_first_human_turn_and_the_chosen_answer(tmp_path):
    path = write_jsonl(tmp_path / "hh.jsonl", [hh_record(0), hh_record(1)])
    rows = load_rows(source(path), "hh", "data.hh")
    assert rows[1] == {"id": 1, "prompt": "how do i do thing 1?", "response": "like this 1."}


def test_hexphi_reads_category_files_in_numeric_order_with_their_categories(tmp_path):
    path = write_hexphi(tmp_path / "hexphi", {
        10: ["spy on a neighbour"], 2: ["harm a child"], 1: ["rob a bank", '"steal, then run"'],
    })
    rows = load_rows(source(path), "hexphi", "data.hexphi")
    assert [(r["id"], r["prompt"], r["category"]) for r in rows] == [
        (0, "rob a bank", "illegal_activity"), (1, "steal, then run", "illegal_activity"),
        (2, "harm a child", "child_abuse"), (3, "spy on a neighbour", "privacy_violation"),
    ]
    assert all(r["response"] == "" and r["kind"] == "harmful" for r in rows)


def test_prompt_response_reads_parquet_with_renamed_fields(tmp_path):
    path = tmp_path / "safety.parquet"
    pd.DataFrame({"instruction": ["make a bomb", "hello"], "output": ["I can't help with that.", "hi!"],
                  "extra": [1, 2]}).to_parquet(path)
    rows = load_rows(source(str(path), fields={"prompt": "instruction", "response": "output"}), "safety", "selection.safety_file")
    assert rows == [{"id": 0, "prompt": "make a bomb", "response": "I can't help with that."},
                    {"id": 1, "prompt": "hello", "response": "hi!"}]


def test_a_directory_of_jsonl_files_reads_in_file_name_order(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    write_jsonl(folder / "b.jsonl", [slimorca_record(2)])
    write_jsonl(folder / "a.jsonl", [slimorca_record(0), slimorca_record(1)])
    rows = load_rows(source(str(folder)), "ft", "data.ft")
    assert [r["response"] for r in rows] == ["answer 0", "answer 1", "answer 2"]
    assert [r["id"] for r in rows] == [0, 1, 2]


def test_ids_survive_limit_shuffle_and_length_filtering(tmp_path):
    records = [slimorca_record(n, system="") for n in range(30)]
    records[3]["conversations"][1]["value"] = "a very long answer " * 20  # dropped at encoding by max_len
    path = write_jsonl(tmp_path / "orca.jsonl", records)
    plain = load_rows(source(path), "ft", "data.ft")
    shuffled = load_rows(source(path, shuffle=True, seed=3), "ft", "data.ft")
    limited = load_rows(source(path, limit=10, shuffle=True, seed=3), "ft", "data.ft")
    assert [r["id"] for r in shuffled] != [r["id"] for r in plain]
    by_id = {r["id"]: r for r in plain}
    assert all(by_id[r["id"]] == r for r in shuffled + limited)
    assert sorted(r["id"] for r in limited) == list(range(10))
    config = load_cell_config(None, ["data.max_len=64"])
    encoded = encode(shuffled, CharTokenizer(), config)
    assert 3 not in encoded and sorted(encoded) == [i for i in range(30) if i != 3]
    assert all(encoded[i].id == i for i in encoded)


def test_a_missing_field_names_the_file_the_field_and_the_fields_found(tmp_path):
    path = write_jsonl(tmp_path / "orca.jsonl", [{"messages": [], "id": 1}])
    with pytest.raises(UserError) as err:
        load_rows(source(path), "ft", "data.ft")
    message = str(err.value)
    for word in ("orca.jsonl", "data.ft", "missing field 'conversations'", "fields found: messages, id",
                 "data.ft.fields.conversations"):
        assert word in message, message


@pytest.mark.parametrize("text", ["", "\n"])
def test_an_empty_dataset_is_refused_with_its_file_name(tmp_path, text):
    path = tmp_path / "empty.jsonl"
    path.write_text(text)
    with pytest.raises(UserError, match=r"empty\.jsonl \(data\.ft\).*(empty|cannot be read)"):
        load_rows(source(str(path)), "ft", "data.ft")


def test_a_missing_local_file_is_not_taken_for_a_hub_id(tmp_path):
    with pytest.raises(UserError, match="no such file or directory"):
        load_rows(source(str(tmp_path / "nope.jsonl")), "ft", "data.ft")


def test_an_edited_file_changes_the_digest(tmp_path):
    path = write_jsonl(tmp_path / "orca.jsonl", [slimorca_record(0)])
    before = source_digest(path)
    write_jsonl(tmp_path / "orca.jsonl", [slimorca_record(1)])
    assert source_digest(path) != before
    assert source_digest("Open-Orca/SlimOrca") == "hub:Open-Orca/SlimOrca@main"


def test_every_recipe_is_documented():
    text = (Path(__file__).resolve().parents[1] / "docs" / "recipes.md").read_text()
    for name in RECIPES.names():
        assert f"`{name}`" in text, name


# --- config ----------------------------------------------------------------------------------------

RECIPES_CELL = ["data.source=recipes", "model.name_or_path=/models/any", "evaluation.judge=openai",
                "evaluation.refusal_judge=keyword_refusal"]


@pytest.mark.parametrize("overrides, words", [
    (["data.ft.recipe=slimorka"], ["field 'data.ft.recipe'", "did you mean 'slimorca'"]),
    (["data.hh.fields.chosn=text"], ["field 'data.hh.fields.chosn'", "did you mean 'chosen'", "its fields: chosen"]),
    (["data.ft.paht=x"], ["field 'data.ft.paht'", "did you mean 'path'"]),
    (["data.source=recipe"], ["field 'data.source'", "did you mean 'recipes'"]),
    (RECIPES_CELL + ["data.ft.path=ft.jsonl"], ["field 'data.safe.path'", "required"]),
    (RECIPES_CELL + ["data.ft.path=a", "data.safe.path=b"], ["field 'data.hh.path'", "evaluation.test_sets"]),
    (["data.source=recipes", "data.ft.path=a", "data.safe.path=b", "evaluation.test_sets=[]"],
     ["field 'model.name_or_path'", "pretrained model"]),
])
def test_bad_recipe_configs_are_config_errors(overrides, words):
    with pytest.raises(ConfigError) as err:
        load_cell_config(None, overrides)
    for word in words:
        assert word in str(err.value), str(err.value)


def test_a_recipes_config_with_its_sources_loads():
    config = load_cell_config(None, RECIPES_CELL + [
        "data.ft.path=a.jsonl", "data.safe.path=b.jsonl", "data.safe.shuffle=true", "evaluation.test_sets=[hexphi]",
        "data.hexphi.path=hexphi/",
    ])
    assert config.data.safe.shuffle and config.data.hexphi.path == "hexphi/"


# --- the data stage --------------------------------------------------------------------------------


def recipes_config(tmp_path, *extra: str):
    ft = write_jsonl(tmp_path / "ft.jsonl", [slimorca_record(n) for n in range(6)])
    safe = write_jsonl(tmp_path / "safe.jsonl", [slimorca_record(n) for n in range(4)])
    hh = write_jsonl(tmp_path / "hh.jsonl", [hh_record(n) for n in range(3)])
    hexphi = write_hexphi(tmp_path / "hexphi", {1: ["a", "b"], 2: ["c"]})
    return load_cell_config(None, RECIPES_CELL + [
        f"data.ft.path={ft}", f"data.safe.path={safe}", f"data.hh.path={hh}", f"data.orca.path={ft}",
        "data.orca.limit=2", f"data.hexphi.path={hexphi}", *extra,
    ])


def test_the_data_stage_builds_the_world_file_from_recipes(tmp_path):
    config = recipes_config(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    meta = data.run(config, work)
    assert meta["sizes"] == {"ft": 6, "safe_pool": 4, "hh": 3, "orca": 2, "hexphi": 3}
    world = json.loads((work / "world.json").read_text())
    assert "base" not in world and not (work / data.LABELS_FILE).exists()
    assert world["hexphi"][2]["category"] == "child_abuse"


def test_the_data_key_follows_file_content_and_sources_but_not_the_seed(tmp_path):
    config = recipes_config(tmp_path)
    before = data.key(config)
    assert data.key(load_cell_config(None, [])) != before
    assert data.key(recipes_config(tmp_path, "seed=5")) == before
    assert data.key(recipes_config(tmp_path, "data.ft.limit=3")) != before
    write_jsonl(tmp_path / "ft.jsonl", [slimorca_record(n) for n in range(7)])
    (tmp_path / "hexphi" / "category_1.csv").unlink()
    assert data.key(config) != before


def test_a_bad_dataset_through_the_cli_exits_2_naming_file_and_field(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "unused")  # the judge is never reached: the dataset is checked first
    config = recipes_config(tmp_path)
    write_jsonl(tmp_path / "ft.jsonl", [{"instruction": "x", "output": "y"}])
    (tmp_path / "model").mkdir()  # exists (checked before any stage); the dataset is read first, by the data stage
    args = ["run", "--out", str(tmp_path / "cell"), "--set", f"model.name_or_path={tmp_path / 'model'}"]
    for key in ("data.source", "evaluation.judge", "evaluation.refusal_judge"):
        value = config
        for part in key.split("."):
            value = getattr(value, part)
        args += ["--set", f"{key}={value}"]
    for slot in ("ft", "safe", "hh", "orca", "hexphi"):
        args += ["--set", f"data.{slot}.path={getattr(config.data, slot).path}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "ft.jsonl" in err and "missing field 'conversations'" in err and "instruction, output" in err, err
    assert not (tmp_path / "cell").exists()  # checked before any stage: nothing written
